"""Codegen: ``relax.ext.spinnaker`` (:mod:`.codegen`: offloaded functions -> board programs in
``"spinnaker"`` runtime modules) and the ``spinnaker`` Relax pipeline with :func:`build`
(:mod:`.pipeline`)."""

"""Machine: the machine graph (:mod:`.graph`: vertices, edges, key fix-ups; the mapping's
result), the kernels' config region encoders (:mod:`.configs`), the one builder from a
tiled graph (:mod:`.builder`) and the toolchain mapping (:mod:`.mapping`: placement,
routing, keys and the region bytes, by PACMAN / front-end-common on a virtual board).

Kept free of heavy imports: the mapping worker imports it without TVM."""

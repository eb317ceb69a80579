"""Config region encoders of the kernels: dense tiles and reducers (:mod:`.dense`), conv,
conv reduce, pool and add tiles (:mod:`.tensor`)."""

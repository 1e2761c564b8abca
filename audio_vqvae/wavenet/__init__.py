"""The WaveNet decoder and its samplers: `model` (the module, teacher-forced `forward`, the named weights its
samplers read) and `sampling` (incremental generation: a torch and a numba step kernel over the same weights)."""

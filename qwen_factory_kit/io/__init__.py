"""Input and output: readers yielding record batches with their source position, the atomic
writer, encodings and source resolution (local paths, ``modelscope://``, ``hf://``)."""

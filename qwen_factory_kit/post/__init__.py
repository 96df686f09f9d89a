"""Post-processing of LLaMA-Factory runs: loss plot and summary (:mod:`.training`)."""

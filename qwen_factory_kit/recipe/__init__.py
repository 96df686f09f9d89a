"""LLaMA-Factory recipes: presets (:mod:`.presets`, the one table), building (:mod:`.build`),
the YAML document (:mod:`.document`), checking (:mod:`.check`), curated recipes
(:mod:`.curated`) and shareable bundles (:mod:`.bundle`)."""

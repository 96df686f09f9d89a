"""LLaMA-Factory recipes: presets (:mod:`.presets`, the one table), building (:mod:`.build`;
the request and the datasets' facts :mod:`.request`, the parts every recipe shares :mod:`.skeleton`,
exact mixes :mod:`.mix`, predict/merge :mod:`.inference`), the YAML document (:mod:`.document`),
checking (:mod:`.check`), curated recipes (:mod:`.curated`) and shareable bundles (:mod:`.bundle`)."""

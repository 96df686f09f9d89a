"""Mixes that hold in trained tokens (``qfk recipe new --mix A=0.75,B=0.25 --mix-by tokens``).

A row ratio is not what the loss sees: reasoning rows are long, so a 75/25 mix of rows can be
86/14 in the label tokens LLaMA-Factory trains. This package makes a mix hold in those tokens and
states every mix's shares in rows and in tokens, one stage a module:

* :mod:`.picks`: the rows a ``NAME__tN`` entry trains: the first N of NAME's rows in a fixed
  seeded order, written as their own file (atomically) with a manifest naming the source, its
  sha256, the rows and their token counts; made again from the name alone when missing;
* :mod:`.solve`: how many rows of each dataset, so that their trained tokens hold the ratios
  (pure: token counts in, row counts out);
* :mod:`.shares`: a mix's shares in rows, trained tokens and all tokens, measured with the
  kit's cached token statistics (:func:`qwen_factory_kit.tokens.file_stats`), as header lines
  and read back from them;
* :mod:`.plan`: what ``qfk recipe new`` writes for a ``--mix`` in either mode;
* :mod:`.check`: ``qfk recipe check``'s findings: the stated shares against the data now, and
  ``NAME__tN`` files whose source changed since they were written.
"""

#: the values of ``qfk recipe new --mix-by``: what the ratios hold in
MIX_BY = ("rows", "tokens")

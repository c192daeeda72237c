"""Text as a dataset: corpora split into train and test (:mod:`.corpus`), token sequences of one length
with one seeded position each (:mod:`.tokens`)."""

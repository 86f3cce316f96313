"""Data: photo corpus, masks, corruption synthesis, datasets and benchmark folders."""

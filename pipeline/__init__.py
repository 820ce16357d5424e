"""openwit's curation pipeline: Beam stages from web candidates to WebDataset shards."""
__version__ = "0.1.0"

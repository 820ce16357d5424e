"""The Beam graph around the stage cores: the stage wrapper, balancing and the graph."""

"""The Beam graph around the stage cores: the stage wrapper, DownloadFn, balancing and the graph."""

"""Data: the shared data sets' readers and example types, the instruction catalogue, training files and the named
training sources."""

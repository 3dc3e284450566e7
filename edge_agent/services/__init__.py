"""One module per op family; each turns validated requests into engine work."""

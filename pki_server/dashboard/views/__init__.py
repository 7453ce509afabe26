"""The dashboard's pages, one module per subject; access.py says who may see and change what."""

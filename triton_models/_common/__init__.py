"""Code shared by the python-backend models of this repository (imported by path: each
model's folder is loaded by Triton on its own)."""

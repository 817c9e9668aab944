"""azuld: a Trio dispatcher daemon for Azul-style malware-analysis pipelines."""

__version__ = "0.1.0"

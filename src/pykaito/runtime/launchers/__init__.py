"""Launchers: build the command line of an external GPU engine (vLLM, ``transformers serve``) and exec it."""

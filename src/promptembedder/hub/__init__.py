"""Persistence: model references (named defaults, paths, Hub ids), manifests, compatibility checks and model cards."""

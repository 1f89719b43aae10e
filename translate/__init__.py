"""Readers (source framework -> graph) and writers (graph -> target framework code)."""

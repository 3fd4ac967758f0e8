"""Tests of the testos fixture itself (the builder lives in testing.testos)."""

"""Computations the routes need beyond storage reads: formats, geometry, trips."""

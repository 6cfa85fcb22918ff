"""The shared numeric layer every stage imports (see docs/design.md, "The shared layer").

One of each: the "cells × features" input check (:mod:`.inputs`), the exact kNN
(:mod:`.knn`), seeded Leiden on a graph (:mod:`.graph`) and ridge with LOO/GCV
(:mod:`.ridge`). Stages import from here, never from each other.
"""

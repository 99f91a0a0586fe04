"""Building blocks every other package may use: errors, the clock, private files, file descriptors, worker threads.

Nothing here imports anything else of Inlet (tests/test_architecture.py checks it).
"""

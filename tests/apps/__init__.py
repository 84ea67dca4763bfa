"""Apps the tests drive, in-process and under real servers."""

"""What the tests share: imported by conftest.py's fixtures and by the test modules."""

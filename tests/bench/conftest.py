"""The bench smoke tests' marker (registered here, so they run in `make test` and can be
picked alone with `-m bench_smoke`)."""


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "bench_smoke: the bench driver and the Locust scenario for a few seconds")

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "requests_piggy_auth" / "_version.py").read_text()
).group(1)

# The fake Piggy server and the pytest fixtures.
TESTING = ["pytest-httpserver>=1.0.8", "werkzeug>=2.3"]
# `piggy-auth demo`: the fake server, a progress bar and a table.
DEMO = [*TESTING, "rich>=13"]
# RedisTokenStore: one token per client for a fleet of processes.
REDIS = ["redis>=4.5"]
# HttpxAuth: the same auth objects and token cache for httpx.Client and httpx.AsyncClient.
HTTPX = ["httpx>=0.24"]
# requests_piggy_auth.otel: OpenTelemetry metrics and traces (the API only; the app picks an SDK).
OTEL = ["opentelemetry-api>=1.20"]
# `python -m benchmarks`: the libraries we measure ourselves against.
# The async scenarios: authlib's AsyncOAuth2Client and httpx-auth on httpx.AsyncClient.
BENCH = [
    *TESTING,
    *HTTPX,
    "authlib>=1.3",
    "requests-oauthlib>=1.3",
    "requests-auth>=7",
    "httpx-auth>=0.22",
]
# The documentation site: Sphinx with furo and MyST Markdown; autodoc imports every module.
DOCS = [*TESTING, *REDIS, *OTEL, "sphinx>=7.2", "furo>=2024.1", "myst-parser>=2"]
TEST = [
    *DEMO,
    *REDIS,
    *HTTPX,
    *OTEL,
    *BENCH,
    "opentelemetry-sdk>=1.20",
    "pytest>=7.4",
    "pytest-cov>=4.1",
    "pytest-timeout>=2.2",
    "pytest-xdist>=3.5",
    "hypothesis>=6.90",
    "mypy>=1.8",
    "ruff>=0.4",
    "types-cachetools",
    "tox>=4",
]

setup(
    name="requests-piggy-auth",
    version=VERSION,
    description="Authentication for the Piggy (Leat) loyalty API: requests and urllib3, "
    "with a shared, thread-safe token cache",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["requests_piggy_auth", "requests_piggy_auth.*"]),
    package_data={"requests_piggy_auth": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "requests>=2.28",
        "urllib3>=1.26.5,<3",
        "cachetools>=5.0",
    ],
    extras_require={
        "testing": TESTING,
        "demo": DEMO,
        "redis": REDIS,
        "httpx": HTTPX,
        "otel": OTEL,
        "bench": BENCH,
        "test": TEST,
        "docs": DOCS,
    },
    entry_points={
        "console_scripts": ["piggy-auth = requests_piggy_auth.cli:main"],
        "pytest11": ["requests_piggy_auth = requests_piggy_auth.pytest_plugin"],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP",
        "Typing :: Typed",
    ],
)

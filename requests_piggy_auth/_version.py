#: The version of requests-piggy-auth.
__version__ = "0.1.0"

"""`python -m ferry_server`: run the HTTP server configured from FERRY_* variables."""

from ferry_server.server import main

if __name__ == "__main__":
    main()

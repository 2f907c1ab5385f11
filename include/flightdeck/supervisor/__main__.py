"""`python -m flightdeck.supervisor up|down|status|urls`: see flightdeck.supervisor.embedded."""

from flightdeck.supervisor.embedded import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Process supervision for the embedded one-machine platform, in one language.

    process.py    one supervised process: the typed `Service` spec, start in its own process group, pid
                  file, port checks, stop (SIGTERM, then SIGKILL after a grace)
    embedded.py   the platform's services (S3, MLflow, Docker engine, registry, Airflow, the LB) and the
                  up / down / status / urls actions that `make up|down|status|urls` run

Run it as `python -m flightdeck.supervisor up|down|status|urls`.
"""

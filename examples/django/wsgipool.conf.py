# wsgipool.conf.py: wsgipool serve -c wsgipool.conf.py mysite.wsgi:application
bind = "0.0.0.0:8000"
workers = 3  # or leave it out: one per CPU of the container's CPU quota
timeout = 60  # the time one request may take; a slow client is not counted
max_requests = 1000
max_requests_jitter = 100
preload = True
access_log = True  # to stderr; there is no log file
proxy_headers = True  # X-Forwarded-For and -Proto, from the proxy only
forwarded_allow_ips = "10.0.0.5"


def post_worker_init(worker):
    # With preload, each worker is a fork of the process that imported Django:
    # it must not share that process's database connections.
    from django.db import connections

    connections.close_all()

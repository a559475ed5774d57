"""Gunicorn settings for `gunicorn -c deploy/gunicorn.conf.py "receiver:create_app()"`.

The settings themselves ship with the package (receiver/web/gunicorn_conf.py, which the Procfile
and the systemd unit name as `-c python:receiver.web.gunicorn_conf`); this file takes all of
them. To change one for a deployment, copy this file and set it below the import, e.g.
`timeout = 60`.
"""

from receiver.web.gunicorn_conf import *  # noqa: F403

"""The local web console (issue #10, part 3): a status page for installers and the alarm
desk for security staff, served on the agent's one HTTP server (``edge_agent/http.py``).
See docs/console.md.

``config``  the ``console:`` section of the agent's YAML, and its check-config checks
``auth``    scrypt password hashes in a credentials file, sessions, CSRF tokens, the
            login rate limit
``sse``     the alarm stream: a bounded ring of transitions with ids, replayed to a
            browser that reconnects with ``Last-Event-ID``
``views``   what the pages show, read from the running agent (devices, health, the
            config check)
``app``     the aiohttp routes, security headers, static pages (``static/``)

The console never imports MQTT, a device protocol or the tools: it reads what the
supervisor hands it and calls the alarm book. aiohttp is imported only by ``app``, which
the supervisor loads only when ``console:`` is configured.
"""

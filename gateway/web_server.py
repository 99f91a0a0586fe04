"""The web server of ``inlet serve``: the Flask app (web UI, REST API, webhooks) on waitress."""

from __future__ import annotations

import logging
import threading

from gateway.config import Config


class WebServer:
    """The Flask app on waitress, in a thread of its own."""

    name = "web"

    def __init__(self, config: Config, app):
        from waitress import create_server

        # waitress warns "Task queue depth is N" for every request queued behind busy threads: a burst
        # of webhooks would write thousands of lines. Requests waiting is normal; errors still show.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self.server = create_server(
            app,
            map={},
            host=config.web.host,
            port=config.web.port,
            threads=config.web.threads,
            ident="inlet",
            clear_untrusted_proxy_headers=True,
        )
        self._stopping = False
        self.thread = threading.Thread(target=self._serve, name="web", daemon=True)

    def _serve(self) -> None:
        try:
            self.server.run()
        except (OSError, ValueError):
            # stop() closes the sockets under the running select(): EBADF then is the way out, not an error
            if not self._stopping:
                raise

    @property
    def port(self) -> int:
        return self.server.effective_port

    def where(self) -> str:
        return f"web UI and webhooks on http://{self.server.effective_host}:{self.port}/"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        from waitress import wasyncore

        self._stopping = True
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.server._map)
        self.thread.join(timeout=10)

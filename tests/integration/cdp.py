"""A headless Chromium driven over the DevTools protocol, for browser tests.

Chromium is started with --remote-debugging-pipe: the protocol's JSON messages,
each ended by a NUL byte, go in on the browser's fd 3 and come out on its fd 4.
That needs nothing but the standard library (no websocket client, no npm
package), and no port that another test could take.

    with Browser() as b:
        page = b.page(width=1280, height=800)
        page.goto("http://127.0.0.1:9901/")
        page.wait_for("document.title") ...
        page.screenshot("out.png")
    b.console_errors   # console.error/assert calls, uncaught exceptions, and
                       # browser log entries of level error (failed loads)

find_chromium() returns the binary or None (tests skip when it is None).
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium():
    env = os.environ.get("MOONGATE_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(Exception):
    pass


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, browser, session):
        self.b = browser
        self.session = session

    def send(self, method, params=None, timeout=15):
        return self.b.send(method, params, session=self.session, timeout=timeout)

    def goto(self, url, timeout=15):
        self.b.clear_events("Page.loadEventFired")
        res = self.send("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise CDPError("navigation to %s failed: %s" % (url, res["errorText"]))
        self.b.wait_event("Page.loadEventFired", self.session, timeout)

    def eval(self, expr, timeout=10):
        """The value of a JavaScript expression (JSON-serialisable)."""
        res = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                             "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in res:
            raise CDPError("evaluating %r: %s" % (expr, res["exceptionDetails"]))
        return res["result"].get("value")

    def wait_for(self, expr, timeout, interval=0.1):
        """Polls a JavaScript expression until it is truthy; returns its value
        (or the last falsy one after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.eval(expr)
            if v or time.monotonic() >= deadline:
                return v
            time.sleep(interval)

    def viewport(self, width, height, mobile=False, scale=1):
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})

    def color_scheme(self, scheme):
        self.send("Emulation.setEmulatedMedia",
                  {"features": [{"name": "prefers-color-scheme", "value": scheme}]})

    def key(self, key, code, vk, shift=False):
        mods = 8 if shift else 0
        for kind in ("rawKeyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": code,
                                                 "windowsVirtualKeyCode": vk, "modifiers": mods})

    def screenshot(self, path, full_page=True):
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                              "scale": 1}
        data = base64.b64decode(self.send("Page.captureScreenshot", params, timeout=30)["data"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return len(data)


class Browser:
    def __init__(self, binary=None):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise CDPError("no chromium binary")
        self.profile = tempfile.mkdtemp(prefix="mg-chromium-")
        self.next_id = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.replies = {}
        self.events = []
        self.console_errors = []
        self.closed = False
        self.proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()

        def plumbing():  # in the child: the pipes become fds 3 and 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        args = [self.binary, "--headless", "--remote-debugging-pipe", "--no-sandbox",
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--disable-features=Translate,MediaRouter,OptimizationHints",
                "--hide-scrollbars", "--mute-audio", "--user-data-dir=" + self.profile,
                "about:blank"]
        self.stderr = open(os.path.join(self.profile, "stderr.log"), "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr, close_fds=False, preexec_fn=plumbing)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf = b""
        while True:
            try:
                data = os.read(self._r, 1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._dispatch(json.loads(raw))
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _dispatch(self, msg):
        with self.cond:
            if "id" in msg:
                self.replies[msg["id"]] = msg
            else:
                self._note_console(msg)
                self.events.append(msg)
                del self.events[:-500]
            self.cond.notify_all()

    def _note_console(self, msg):
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console_errors.append("exception: %s %s" % (
                d.get("text"), (d.get("exception") or {}).get("description", "")))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.console_errors.append("console.%s: %s" % (
                p["type"], " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.console_errors.append("log (%s): %s %s" % (e.get("source"), e.get("text"), e.get("url", "")))

    def send(self, method, params=None, session=None, timeout=15):
        with self.cond:
            self.next_id += 1
            mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self.cond:
            while mid not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise CDPError("%s: no reply within %ss%s" % (
                        method, timeout, " (browser gone)" if self.closed else ""))
                self.cond.wait(left)
            reply = self.replies.pop(mid)
        if "error" in reply:
            raise CDPError("%s: %s" % (method, reply["error"]))
        return reply.get("result", {})

    def clear_events(self, method):
        with self.cond:
            self.events = [e for e in self.events if e.get("method") != method]

    def wait_event(self, method, session, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, e in enumerate(self.events):
                    if e.get("method") == method and e.get("sessionId") == session:
                        return self.events.pop(i)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise CDPError("no %s within %ss" % (method, timeout))
                self.cond.wait(left)

    def page(self, width=1280, height=800):
        """Attaches to a new tab with console capture on."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        p = Page(self, session)
        for domain in ("Page", "Runtime", "Log"):
            p.send(domain + ".enable")
        p.viewport(width, height)
        return p

    def close(self):
        if self.proc is None:
            return
        try:
            self.send("Browser.close", timeout=5)
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        self.proc = None

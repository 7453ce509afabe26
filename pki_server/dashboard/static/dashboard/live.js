// The dashboard's live feed: events of /dashboard/ws/events/ (pki_server/dashboard/consumers.py), newest first.
// No framework and no inline code (the pages' CSP allows scripts from 'self' only); text goes in with
// textContent, never innerHTML. #live-events carries the connection's state in data-state:
// connecting, open, closed (reconnecting after a delay) or forbidden (the session is not a staff login).
(function () {
  "use strict";

  var MAX_EVENTS = 50;
  var MIN_DELAY = 1000; // ms before the first reconnection, doubled after each failure ...
  var MAX_DELAY = 30000; // ... up to this
  var FORBIDDEN = 4403; // the server's close code for a session that may not watch

  var section = document.getElementById("live-events");
  var list = document.getElementById("live-event-list");
  if (!section || !list || !window.WebSocket) {
    return;
  }
  var path = section.getAttribute("data-ws-path") || "/dashboard/ws/events/";
  var url = (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + path;
  var delay = MIN_DELAY;

  function setState(state) {
    section.setAttribute("data-state", state);
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    node.className = className;
    node.textContent = text;
    return node;
  }

  function twoDigits(number) {
    return (number < 10 ? "0" : "") + number;
  }

  // "2025-01-01T12:00:00Z" as the browser's local time of day, "13:00:00"; the text as sent if it is no time.
  function localTime(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) {
      return iso;
    }
    return twoDigits(date.getHours()) + ":" + twoDigits(date.getMinutes()) + ":" + twoDigits(date.getSeconds());
  }

  // An event as a row (dashboard.css lays it out): kind badge, time, summary, "details" link; the
  // detail (a failure's problem) on a line of its own below the summary.
  function show(event) {
    if (!event || typeof event.kind !== "string") {
      return;
    }
    var item = document.createElement("li");
    item.className = "event event-" + event.kind.replace(/\./g, "-");
    var outcome = event.kind.split(".").pop();
    item.appendChild(element("span", "event-kind event-kind-" + outcome, event.kind.replace(/\./g, " ")));
    item.appendChild(document.createTextNode(" "));
    var time = element("time", "event-time", event.time ? localTime(event.time) : "");
    if (event.time) {
      time.setAttribute("datetime", event.time);
      time.setAttribute("title", event.time);
    }
    item.appendChild(time);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(element("span", "event-summary", event.summary || event.kind));
    // Only links within this site: the server sends paths such as /dashboard/certificates/<serial>/.
    if (typeof event.url === "string" && event.url.charAt(0) === "/" && event.url.charAt(1) !== "/") {
      var link = element("a", "event-link", "details");
      link.href = event.url;
      item.appendChild(document.createTextNode(" "));
      item.appendChild(link);
    }
    if (event.detail) {
      item.appendChild(document.createTextNode(" "));
      item.appendChild(element("span", "event-detail", event.detail));
    }
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_EVENTS) {
      list.removeChild(list.lastChild);
    }
  }

  function connect() {
    setState("connecting");
    var socket = new WebSocket(url);
    socket.onopen = function () {
      delay = MIN_DELAY;
      setState("open");
    };
    socket.onmessage = function (message) {
      try {
        show(JSON.parse(message.data));
      } catch (error) {
        // A message that is not an event: ignore it.
      }
    };
    socket.onclose = function (close) {
      if (close.code === FORBIDDEN) {
        setState("forbidden");
        return; // logging in again reloads the page, and with it the feed
      }
      setState("closed");
      window.setTimeout(connect, delay);
      delay = Math.min(delay * 2, MAX_DELAY);
    };
  }

  connect();
})();

'use strict';
// A small client for the sseio hub's publish API, shaped like the original server's API so
// that `eventHandler.send(roomId, message)` keeps its shape. No dependencies: Node 18+'s fetch.

class HubError extends Error {
  constructor(status, body) {
    super(`the hub answered ${status}: ${body && body.message ? body.message : JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * @param {{url: string, apiKey: string}} options the hub's base URL (`http://hub:8080`) and an
 *   API key from its `[publish] api_keys`.
 */
function newHub({ url, apiKey }) {
  const base = url.replace(/\/+$/, '');

  async function call(method, path, body) {
    const response = await fetch(`${base}/api${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const answer = text ? JSON.parse(text) : {};
    if (!response.ok) throw new HubError(response.status, answer);
    return answer;
  }

  return {
    /** What `sseServer.registerEventHandler(event, ..)` returned: `send(roomId, message)`. */
    eventHandler(event) {
      return {
        /** A string goes out verbatim, anything else as its JSON text, as in the original. */
        send: (roomId, message) => call('POST', '/publish', { event, room: roomId, data: message }),
        /** Several messages to this event's rooms in one request, in order. */
        sendMany: (messages) =>
          call('POST', '/publish', messages.map(([room, data]) => ({ event, room, data }))),
        presence: (roomId) =>
          call('GET', `/presence?event=${encodeURIComponent(event)}&room=${encodeURIComponent(roomId)}`),
      };
    },
    sendToClient: (clientId, event, message) =>
      call('POST', '/send-to-client', { clientId, event, data: message }),
    disconnect: (clientId) => call('POST', '/disconnect', { clientId }),
  };
}

module.exports = { newHub, HubError };

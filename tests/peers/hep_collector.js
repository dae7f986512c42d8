// A HEP collector for the tests, built on sipcapture's own HEP3 decoder (hep-js, from
// the npm registry; scripts/install-peers.sh installs it into .cache/hep-js).
//
// Listens on UDP 127.0.0.1 at the port given as the first argument (0: any free one),
// prints {"port": N} once bound, then one JSON line per datagram: what hep-js decoded
// ({"rcinfo": {...}, "payload": "..."}), or {"undecodable": <length>} when hep-js
// refused it. Runs until killed.
"use strict";
const dgram = require("dgram");
const HEP = require("hep-js");

const socket = dgram.createSocket("udp4");
socket.on("message", (message) => {
  const decoded = HEP.decapsulate(message);
  const line = decoded ? decoded : { undecodable: message.length };
  process.stdout.write(JSON.stringify(line) + "\n");
});
socket.bind(Number(process.argv[2] || 0), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: socket.address().port }) + "\n");
});

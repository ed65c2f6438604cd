// JsSIP, the library browsers use, against sipproxy over ws: or wss:.
// Registers, takes a MESSAGE and answers it with one, calls the UDP peer
// and hangs up, takes a call from it and waits for its BYE, unregisters
// (with SIPPROXY_CALLS=0 it unregisters after the MESSAGEs).
// Each step prints one JSON line on stdout; the Python test drives the peer.
// JsSIP in node has no WebRTC: a stand-in RTCPeerConnection hands JsSIP a
// fixed SDP (no media flows; the signalling is JsSIP's own).
'use strict';

const fs = require('fs');
const JsSIP = require('jssip');
const NodeWebSocket = require('jssip-node-websocket');

const url = process.env.SIPPROXY_WS_URL;       // ws://127.0.0.1:PORT or wss://...
const aor = process.env.SIPPROXY_AOR;          // sip:alice@example.test
const peer = process.env.SIPPROXY_PEER;        // sip:bob@127.0.0.1:PORT (UDP)
const ca = process.env.SIPPROXY_CA;            // CA of the wss certificate (optional)

function say(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields || {})) + '\n');
}

const SDP = [
  'v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0',
  'm=audio 40002 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', 'a=sendrecv', ''
].join('\r\n');

class RTCSessionDescription {
  constructor(init) { this.type = init.type; this.sdp = init.sdp; }
}

class RTCPeerConnection {
  constructor() {
    this.signalingState = 'stable';
    this.iceConnectionState = 'new';
    this.iceGatheringState = 'complete';
    this.localDescription = null;
    this.remoteDescription = null;
  }
  addEventListener() {}
  removeEventListener() {}
  addTrack() {}
  getSenders() { return []; }
  getReceivers() { return []; }
  getLocalStreams() { return []; }
  getRemoteStreams() { return []; }
  createOffer() { return Promise.resolve(new RTCSessionDescription({ type: 'offer', sdp: SDP })); }
  createAnswer() { return Promise.resolve(new RTCSessionDescription({ type: 'answer', sdp: SDP })); }
  setLocalDescription(d) { this.localDescription = d; return Promise.resolve(); }
  setRemoteDescription(d) { this.remoteDescription = d; return Promise.resolve(); }
  close() { this.signalingState = 'closed'; }
}
global.RTCPeerConnection = RTCPeerConnection;
global.RTCSessionDescription = RTCSessionDescription;
global.window = global;  // JsSIP looks for window.RTCPeerConnection

const options = ca ? { clientConfig: { tlsOptions: { ca: fs.readFileSync(ca) } } } : {};
const socket = new NodeWebSocket(url, options);
const ua = new JsSIP.UA({
  sockets: [socket], uri: aor, register: true, session_timers: false,
  password: process.env.SIPPROXY_PASSWORD || undefined,  // digest (--users) when set
  connection_recovery_min_interval: 1, connection_recovery_max_interval: 2,
  user_agent: 'JsSIP ' + JsSIP.version
});
const noMedia = { mediaConstraints: { audio: false, video: false } };
let step = 'register';

const deadline = setTimeout(() => { say('timeout', { step }); process.exit(3); }, 30000);

ua.on('connected', () => say('connected', { url }));
ua.on('registered', (e) => {
  say('registered', { status: e.response.status_code, contact: e.response.getHeader('Contact') });
  step = 'message';
});
ua.on('registrationFailed', (e) => { say('registration-failed', { cause: e.cause }); process.exit(4); });
ua.on('unregistered', () => {
  say('unregistered');
  clearTimeout(deadline);
  ua.stop();
  setTimeout(() => process.exit(0), 200);
});

ua.on('newMessage', (e) => {
  if (e.originator !== 'remote') return;
  say('message-received', { body: e.request.body, from: e.request.from.uri.toString() });
  step = 'reply';
  ua.sendMessage(peer, 'pong from JsSIP', {
    eventHandlers: {
      succeeded: (r) => {
        say('message-sent', { status: r.response.status_code });
        if (process.env.SIPPROXY_CALLS === '0') ua.unregister(); else callPeer();
      },
      failed: (r) => { say('message-failed', { cause: r.cause }); process.exit(5); }
    }
  });
});

function callPeer() {
  step = 'call-out';
  const session = ua.call(peer, Object.assign({
    eventHandlers: {
      confirmed: () => { say('call-out-confirmed'); session.terminate(); },
      ended: (e) => { say('call-out-ended', { cause: e.cause, originator: e.originator }); step = 'call-in'; say('waiting-call'); },
      failed: (e) => { say('call-out-failed', { cause: e.cause }); process.exit(6); }
    }
  }, noMedia));
}

ua.on('newRTCSession', (e) => {
  if (e.originator !== 'remote') return;
  const session = e.session;
  say('call-in', { from: e.request.from.uri.toString(), record_route: e.request.getHeaders('Record-Route') });
  session.on('confirmed', () => say('call-in-confirmed'));
  session.on('ended', (ev) => {
    say('call-in-ended', { cause: ev.cause, originator: ev.originator });
    ua.unregister();
  });
  session.on('failed', (ev) => { say('call-in-failed', { cause: ev.cause }); process.exit(7); });
  session.answer(noMedia);
});

ua.start();

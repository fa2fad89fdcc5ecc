'use strict';
// goray client for Node.js: call Go functions and named actors deployed on a
// goray cluster, and put and get objects, over goray's public ClientService
// (proto/goray/v1/client.proto, loaded at run time with @grpc/proto-loader).
//
//   const goray = require('goray-client');
//   const client = await goray.connect('127.0.0.1:6379', { namespace: 'service' });
//   await client.call('square', 12);                 // 144
//   await client.actor('counter').call('add', 5);
//   const info = await client.putFile('data.csv', { replicas: 3, name: 'in/data.csv' });
//   await client.getFile('in/data.csv', { dest: 'copy.csv' }); // verified
//
// Values travel as MessagePack by default (plain JS values), Buffers and
// Uint8Arrays as raw bytes; pass { encoding: 'json' } to send JSON.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const msgpack = require('@msgpack/msgpack');

const PROTOCOL_VERSION = 1;
const CLIENT_NAME = 'goray-node/0.1.0';
const CHUNK = 1 << 20;
const MAX_MESSAGE = 16 << 20;
const ENCODINGS = {
  raw: 'ENCODING_RAW',
  protobuf: 'ENCODING_PROTOBUF',
  msgpack: 'ENCODING_MSGPACK',
  json: 'ENCODING_JSON',
};
const ENCODING_NAMES = Object.fromEntries(Object.entries(ENCODINGS).map(([k, v]) => [v, k]));

// protoDir is where goray's .proto files are: GORAY_PROTO_DIR, else the
// repository's proto/ next to this package.
function protoDir() {
  return process.env.GORAY_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto');
}

let services;
function loadServices() {
  if (!services) {
    const def = protoLoader.loadSync('goray/v1/client.proto', {
      includeDirs: [protoDir()],
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    services = grpc.loadPackageDefinition(def).goray.v1;
  }
  return services;
}

/** A failed goray call: code is the gRPC status code, details the server's message. */
class GorayError extends Error {
  constructor(code, details) {
    const name = Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
    super(`${name}: ${details}`);
    this.name = this.constructor.name;
    this.code = code;
    this.codeName = name;
    this.details = details;
  }
}
/** Unknown namespace, actor, method, function or ref (NOT_FOUND). */
class NotFoundError extends GorayError {}
/** An undecodable payload or an argument of the wrong type (INVALID_ARGUMENT). */
class InvalidArgumentError extends GorayError {}
/** A missing or wrong cluster token (UNAUTHENTICATED). */
class UnauthenticatedError extends GorayError {}
/** The Go function or method returned an error or panicked (ABORTED). */
class TaskError extends GorayError {}
/** Out of a resource, e.g. the file store's disk is full (RESOURCE_EXHAUSTED). */
class ResourceExhaustedError extends GorayError {}

const ERRORS = {
  [grpc.status.NOT_FOUND]: NotFoundError,
  [grpc.status.INVALID_ARGUMENT]: InvalidArgumentError,
  [grpc.status.UNAUTHENTICATED]: UnauthenticatedError,
  [grpc.status.ABORTED]: TaskError,
  [grpc.status.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
};

function toError(err) {
  if (err instanceof GorayError || typeof err.code !== 'number') return err;
  const Cls = ERRORS[err.code] || GorayError;
  return new Cls(err.code, err.details || err.message);
}

/** A value already encoded: encoding is 'raw', 'protobuf', 'msgpack' or 'json'. */
class Encoded {
  constructor(encoding, data, typeUrl = '') {
    if (!ENCODINGS[encoding]) throw new TypeError(`unknown encoding ${encoding}: want one of ${Object.keys(ENCODINGS)}`);
    this.encoding = encoding;
    this.data = Buffer.from(data);
    this.typeUrl = typeUrl;
  }
}

/** A reference to an object the cluster holds for this client. */
class Ref {
  constructor(namespace, objectId) {
    this.namespace = namespace;
    this.objectId = Buffer.from(objectId);
  }
  get id() {
    return this.objectId.toString('hex');
  }
  toProto() {
    return { namespace: this.namespace, object_id: this.objectId };
  }
  static fromProto(r) {
    return new Ref(r.namespace, r.object_id);
  }
  toString() {
    return `Ref(${this.namespace}, ${this.id})`;
  }
}

function encode(value, encoding) {
  if (value instanceof Encoded) {
    return { encoding: ENCODINGS[value.encoding], data: value.data, type_url: value.typeUrl };
  }
  if (!encoding) encoding = Buffer.isBuffer(value) || value instanceof Uint8Array ? 'raw' : 'msgpack';
  switch (encoding) {
    case 'raw':
      return { encoding: ENCODINGS.raw, data: Buffer.from(value), type_url: '' };
    case 'msgpack':
      return { encoding: ENCODINGS.msgpack, data: Buffer.from(msgpack.encode(value)), type_url: '' };
    case 'json':
      return { encoding: ENCODINGS.json, data: Buffer.from(JSON.stringify(value)), type_url: '' };
    case 'protobuf':
      throw new TypeError("to send protobuf, pass new Encoded('protobuf', bytes, typeUrl)");
    default:
      throw new TypeError(`unknown encoding ${encoding}: want one of ${Object.keys(ENCODINGS)}`);
  }
}

function decode(encoding, typeUrl, data) {
  switch (encoding) {
    case ENCODINGS.raw:
      return data;
    case ENCODINGS.msgpack:
      return msgpack.decode(data);
    case ENCODINGS.json:
      return JSON.parse(data.toString('utf8'));
    default:
      return new Encoded(ENCODING_NAMES[encoding] || 'raw', data, typeUrl);
  }
}

// tokenFor finds the token: given, else GORAY_TOKEN, else the file
// GORAY_TOKEN_FILE names, else the file `raylet --head` wrote for address on
// this machine. An explicit '' sends no token.
function tokenFor(address, token) {
  if (token !== undefined && token !== null) return token;
  if (process.env.GORAY_TOKEN) return process.env.GORAY_TOKEN;
  const files = [];
  if (process.env.GORAY_TOKEN_FILE) files.push(process.env.GORAY_TOKEN_FILE);
  const name = address.replace(/:/g, '_').replace(/[[\]]/g, '').replace(/\//g, '_');
  files.push(path.join(os.tmpdir(), `goray-${process.getuid()}`, 'tokens', `${name}.token`));
  for (const f of files) {
    try {
      const t = fs.readFileSync(f, 'utf8').trim();
      if (t) return t;
    } catch {
      // next
    }
  }
  return '';
}

function unary(stub, method, req, md, timeout) {
  return new Promise((resolve, reject) => {
    const opts = timeout ? { deadline: Date.now() + timeout * 1000 } : {};
    stub[method](req, md, opts, (err, resp) => (err ? reject(toError(err)) : resolve(resp)));
  });
}

/** A connection to a goray cluster's ClientService. Use connect(). */
class Client {
  constructor(address, { token, namespace = 'default', timeout = 30 } = {}) {
    this.address = address;
    this.namespace = namespace;
    this.timeout = timeout;
    // Several heads ('10.0.0.1:6379,10.0.0.2:6379,...'): any head's gateway
    // serves the client (it reaches the leader itself); the channel uses the
    // first that answers and moves on when it dies.
    const heads = address.split(',').map((a) => a.trim()).filter(Boolean);
    const tok = tokenFor(heads[0] || address, token);
    this._md = new grpc.Metadata();
    if (tok) this._md.set('authorization', `Bearer ${tok}`);
    const { ClientService } = loadServices();
    const target = heads.length > 1 ? `ipv4:${heads.join(',')}` : address;
    this._stub = new ClientService(target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX_MESSAGE,
      'grpc.max_send_message_length': MAX_MESSAGE,
    });
    this.info = null;
  }

  async _handshake() {
    this.info = await unary(this._stub, 'Handshake', { protocol_version: PROTOCOL_VERSION, client_name: CLIENT_NAME }, this._md, this.timeout);
    this._chunk = Number(this.info.chunk_size) || CHUNK;
    return this;
  }

  close() {
    this._stub.close();
  }

  /**
   * Stores value; returns its Ref. With replicas: n (1 to 64) the value is
   * kept on n distinct nodes (all of them when fewer are alive); the Ref's
   * replicas says how many.
   */
  put(value, { encoding, namespace, replicas } = {}) {
    const p = encode(value, encoding);
    const ns = namespace || this.namespace;
    const chunk = this._chunk || CHUNK;
    return new Promise((resolve, reject) => {
      const opts = this.timeout ? { deadline: Date.now() + this.timeout * 1000 } : {};
      const call = this._stub.Put(this._md, opts, (err, resp) => {
        if (err) return reject(toError(err));
        const ref = Ref.fromProto(resp.ref);
        ref.replicas = resp.replicas;
        resolve(ref);
      });
      const data = p.data;
      const msgs = [{ namespace: ns, encoding: p.encoding, type_url: p.type_url, size: data.length, chunk: data.subarray(0, chunk), replicas: replicas || 0 }];
      for (let off = chunk; off < data.length; off += chunk) msgs.push({ chunk: data.subarray(off, off + chunk) });
      let i = 0;
      const pump = () => {
        while (i < msgs.length) {
          if (!call.write(msgs[i++])) {
            call.once('drain', pump);
            return;
          }
        }
        call.end();
      };
      pump();
    });
  }

  /** Waits for the object (up to timeout seconds) and returns its value. */
  get(ref, { timeout } = {}) {
    const t = timeout ?? this.timeout;
    return new Promise((resolve, reject) => {
      const opts = t ? { deadline: Date.now() + t * 1000 } : {};
      const stream = this._stub.Get({ ref: ref.toProto() }, this._md, opts);
      const parts = [];
      let head = null;
      stream.on('data', (msg) => {
        if (!head) head = msg;
        parts.push(msg.chunk);
      });
      stream.on('error', (err) => reject(toError(err)));
      stream.on('end', () => resolve(decode(head ? head.encoding : ENCODINGS.raw, head ? head.type_url : '', Buffer.concat(parts))));
    });
  }

  /** Waits until numReturns (default all) refs are ready; returns { ready, notReady }. */
  async wait(refs, { numReturns = 0, timeout = 0 } = {}) {
    const resp = await unary(this._stub, 'Wait',
      { refs: refs.map((r) => r.toProto()), num_returns: numReturns, timeout_ms: Math.round(timeout * 1000) },
      this._md, timeout ? timeout + 10 : this.timeout);
    return { ready: resp.ready.map(Ref.fromProto), notReady: resp.not_ready.map(Ref.fromProto) };
  }

  /** Drops refs; returns how many were held. */
  async release(...refs) {
    const resp = await unary(this._stub, 'Release', { refs: refs.map((r) => r.toProto()) }, this._md, this.timeout);
    return resp.released;
  }

  _args(args) {
    return args.map((a) => (a instanceof Ref ? { ref: a.toProto() } : { value: encode(a) }));
  }

  /** Runs a registered Go function as a task; returns the Ref of its result. */
  async remote(fn, ...args) {
    return this.remoteWith(fn, args);
  }

  /** remote() with options: { namespace, resources }. */
  async remoteWith(fn, args, { namespace, resources } = {}) {
    const resp = await unary(this._stub, 'CallFunction',
      { namespace: namespace || this.namespace, function: fn, args: this._args(args), resources: resources || {} },
      this._md, this.timeout);
    return Ref.fromProto(resp.ref);
  }

  /** remote() and get(): runs the function and returns its result. */
  async call(fn, ...args) {
    return this.get(await this.remote(fn, ...args));
  }

  /** A handle to the named actor. */
  actor(name, { namespace } = {}) {
    return new ActorHandle(this, name, namespace || this.namespace);
  }

  /** Looks a live named actor up. */
  async getActor(name, { namespace } = {}) {
    const resp = await unary(this._stub, 'GetNamedActor', { namespace: namespace || this.namespace, name }, this._md, this.timeout);
    return resp.actor;
  }

  /**
   * Creates the cache name (or opens it when it exists with the same
   * configuration; another one rejects with ALREADY_EXISTS). Options:
   * shards (0: one per alive node), maxEntries and maxBytes per shard (0: no
   * bound; least recently used entries go first), ttl in seconds, detached,
   * namespace.
   */
  async createCache(name, { shards = 0, maxEntries = 0, maxBytes = 0, ttl = 0, detached = false, namespace } = {}) {
    const ns = namespace || this.namespace;
    await unary(this._stub, 'CacheCreate', {
      cache: { namespace: ns, name }, shards, max_entries: maxEntries, max_bytes: maxBytes,
      ttl_ms: Math.round((ttl || 0) * 1000), detached,
    }, this._md, this.timeout);
    return new Cache(this, name, ns);
  }

  /** The existing cache name (checked on first use: NotFoundError). */
  cache(name, { namespace } = {}) {
    return new Cache(this, name, namespace || this.namespace);
  }

  /** What the namespace offers: { functions: {name: argTypes}, actorTypes: {name: {method: argTypes}} }. */
  async listNamespace({ namespace } = {}) {
    const resp = await unary(this._stub, 'ListNamespace', { namespace: namespace || this.namespace }, this._md, this.timeout);
    const reg = resp.registry || { functions: [], actor_types: [] };
    return {
      functions: Object.fromEntries(reg.functions.map((f) => [f.name, f.arg_types])),
      actorTypes: Object.fromEntries(reg.actor_types.map((t) => [t.name, Object.fromEntries(t.methods.map((m) => [m.name, m.arg_types]))])),
    };
  }
}

// ttlMs is a ttl in seconds on the wire: undefined the cache's default,
// <= 0 never expires.
function ttlMs(ttl) {
  if (ttl === undefined || ttl === null) return 0;
  if (ttl <= 0) return -1;
  return Math.max(1, Math.round(ttl * 1000));
}

/** Marks compareAndSwap's expected value as "the key holds nothing". */
const ABSENT = Symbol('goray.ABSENT');

/**
 * A cache of the goray cluster (client.createCache, client.cache). Values
 * are encoded as everywhere in this client (MessagePack by default), so Go
 * programs read them as typed values. A shard lost with its node reads as a
 * miss; its writes are dropped.
 */
class Cache {
  constructor(client, name, namespace) {
    this._client = client;
    this.name = name;
    this.namespace = namespace;
    this._ref = { namespace, name };
  }

  _rpc(method, req, timeout) {
    const c = this._client;
    return unary(c._stub, method, { cache: this._ref, ...req }, c._md, timeout ?? c.timeout);
  }

  /** The key's value, or dflt on a miss. */
  async get(key, dflt = undefined) {
    const resp = await this._rpc('CacheGet', { key });
    return resp.found ? decode(resp.value.encoding, resp.value.type_url, resp.value.data) : dflt;
  }

  /** Whether the key has a value. */
  async has(key) {
    return (await this._rpc('CacheGet', { key })).found;
  }

  /** Stores value under key; options: ttl in seconds (0: never expires), encoding. */
  async set(key, value, { ttl, encoding } = {}) {
    await this._rpc('CacheSet', { key, value: encode(value, encoding), ttl_ms: ttlMs(ttl) });
  }

  /** Removes key; whether it was there. */
  async delete(key) {
    return (await this._rpc('CacheDelete', { key })).deleted;
  }

  /** Adds delta to the integer under key (missing: 0), atomically; the new value. */
  async incr(key, delta = 1, { ttl } = {}) {
    return Number((await this._rpc('CacheIncrement', { key, delta, ttl_ms: ttlMs(ttl) })).value);
  }

  /** Stores value when the key holds expected (ABSENT: nothing), atomically; whether it did. */
  async compareAndSwap(key, expected, value, { ttl } = {}) {
    const req = { key, value: encode(value), ttl_ms: ttlMs(ttl) };
    if (expected !== ABSENT) req.expected = encode(expected);
    return (await this._rpc('CacheCompareAndSwap', req)).swapped;
  }

  /**
   * The key's value; on a miss exactly one caller across the cluster runs
   * compute() (the others wait for its value). If compute throws, the lease
   * is given up and the error propagates. Options: ttl, lease (seconds the
   * lease lasts, default 60; it is not renewed).
   */
  async getOrCompute(key, compute, { ttl, lease = 60 } = {}) {
    const resp = await this._rpc('CacheAcquire', { key, lease_ms: Math.max(1, Math.round(lease * 1000)) },
      Math.max(this._client.timeout || 30, 30));
    if (resp.found) return decode(resp.value.encoding, resp.value.type_url, resp.value.data);
    if (!resp.lease) return compute(); // the shard is lost: compute, uncached
    let value;
    try {
      value = await compute();
    } catch (err) {
      await this._rpc('CacheAbandon', { key, lease: resp.lease });
      throw err;
    }
    await this._rpc('CacheFulfill', { key, lease: resp.lease, value: encode(value), ttl_ms: ttlMs(ttl) });
    return value;
  }

  /** { total, shards }: hits, misses, evictions, expirations, computes, entries, bytes, node_id, unavailable. */
  async stats() {
    const resp = await this._rpc('CacheStats', {});
    const d = (s) => ({
      hits: Number(s.hits), misses: Number(s.misses), evictions: Number(s.evictions),
      expirations: Number(s.expirations), computes: Number(s.computes), entries: Number(s.entries),
      bytes: Number(s.bytes), node_id: s.node_id, unavailable: s.unavailable,
    });
    return { total: d(resp.total), shards: resp.shards.map(d) };
  }
}

/** A stored file of the file store: sha256 (hex, its address), size, names,
 * replicasWanted and replicaNodes (the alive nodes holding a replica). */
function fileInfo(f) {
  return {
    sha256: f.sha256,
    size: Number(f.size),
    names: f.names || [],
    replicasWanted: f.replicas_wanted,
    replicaNodes: f.replica_nodes || [],
  };
}

// Files: the cluster's file store (docs/storage.md).
Object.assign(Client.prototype, {
  /**
   * Stores a file with `replicas` copies on distinct nodes (default 1),
   * optionally under `name`; source is a Buffer or Uint8Array, a path, or a
   * readable stream (sent in chunks, never whole in memory). Resolves to its
   * file info: fewer replicaNodes than asked when fewer nodes are alive.
   */
  putFile(source, { replicas = 1, name = '', timeout } = {}) {
    const t = timeout ?? this.timeout;
    const chunk = this._chunk || CHUNK;
    return new Promise((resolve, reject) => {
      const opts = t ? { deadline: Date.now() + t * 1000 } : {};
      const call = this._stub.FilePut(this._md, opts, (err, resp) => (err ? reject(toError(err)) : resolve(fileInfo(resp.file))));
      call.write({ replicas, name });
      if (source instanceof Uint8Array) {
        const data = Buffer.from(source.buffer, source.byteOffset, source.byteLength);
        let off = 0;
        const pump = () => {
          while (off < data.length) {
            const more = call.write({ chunk: data.subarray(off, off + chunk) });
            off += chunk;
            if (!more) {
              call.once('drain', pump);
              return;
            }
          }
          call.end();
        };
        pump();
        return;
      }
      const input = typeof source === 'string' ? fs.createReadStream(source, { highWaterMark: chunk }) : source;
      input.on('data', (b) => {
        for (let off = 0; off < b.length; off += chunk) {
          if (!call.write({ chunk: b.subarray(off, off + chunk) })) {
            input.pause();
            call.once('drain', () => input.resume());
          }
        }
      });
      input.on('end', () => call.end());
      input.on('error', (err) => {
        call.cancel();
        reject(err);
      });
    });
  },

  /**
   * Reads a file by hash (64 hex digits, optionally after "sha256:") or name,
   * verified against its hash. With `dest` (a path or a writable stream) the
   * bytes are written there and the file info is returned; without, a Buffer.
   */
  getFile(ref, { dest, timeout } = {}) {
    const t = timeout ?? this.timeout;
    return new Promise((resolve, reject) => {
      const opts = t ? { deadline: Date.now() + t * 1000 } : {};
      const out = typeof dest === 'string' ? fs.createWriteStream(dest) : dest;
      const stream = this._stub.FileGet({ ref }, this._md, opts);
      const parts = [];
      let info = null;
      stream.on('data', (msg) => {
        if (msg.file) info = fileInfo(msg.file);
        if (!out) parts.push(msg.chunk);
        else if (!out.write(msg.chunk)) {
          stream.pause();
          out.once('drain', () => stream.resume());
        }
      });
      stream.on('error', (err) => {
        if (out && out !== dest) out.destroy();
        reject(toError(err));
      });
      stream.on('end', () => {
        if (!out) resolve(Buffer.concat(parts));
        else if (out !== dest) out.end(() => resolve(info));
        else resolve(info);
      });
    });
  },

  /** Describes a file by hash or name. */
  async statFile(ref) {
    const resp = await unary(this._stub, 'FileStat', { ref }, this._md, this.timeout);
    return fileInfo(resp.file);
  },

  /** Lists the files (with a prefix: the named ones under it). */
  async listFiles(prefix = '') {
    const resp = await unary(this._stub, 'FileList', { prefix }, this._md, this.timeout);
    return resp.files.map(fileInfo);
  },

  /** Removes a name (and the file when no other name maps to it) or a file by
   * hash with its names; resolves true when the content went. */
  async removeFile(ref) {
    const resp = await unary(this._stub, 'FileRemove', { ref }, this._md, this.timeout);
    return resp.removed_content;
  },
});

/** A named actor: call its registered methods by name. */
class ActorHandle {
  constructor(client, name, namespace) {
    this._client = client;
    this.name = name;
    this.namespace = namespace;
  }

  /** Calls method; returns the Ref of its result. Calls from one client run in order. */
  async remote(method, ...args) {
    const c = this._client;
    const resp = await unary(c._stub, 'CallActor',
      { namespace: this.namespace, actor_name: this.name, method, args: c._args(args) }, c._md, c.timeout);
    return Ref.fromProto(resp.ref);
  }

  /** remote() and get(). */
  async call(method, ...args) {
    return this._client.get(await this.remote(method, ...args));
  }
}

/**
 * Connects to the goray head at address (default GORAY_ADDRESS) and checks
 * the token and protocol version. Options: token (default GORAY_TOKEN, the
 * file GORAY_TOKEN_FILE names, then the token file `raylet --head` wrote on
 * this machine), namespace (default 'default'), timeout in seconds (30).
 */
async function connect(address, options = {}) {
  address = address || process.env.GORAY_ADDRESS;
  if (!address) throw new TypeError("no address: pass connect('HOST:PORT') or set GORAY_ADDRESS");
  const client = new Client(address, options);
  try {
    return await client._handshake();
  } catch (err) {
    client.close();
    throw err;
  }
}

module.exports = {
  PROTOCOL_VERSION,
  ABSENT,
  Cache,
  connect,
  Client,
  ActorHandle,
  Ref,
  Encoded,
  GorayError,
  NotFoundError,
  InvalidArgumentError,
  UnauthenticatedError,
  TaskError,
  ResourceExhaustedError,
};

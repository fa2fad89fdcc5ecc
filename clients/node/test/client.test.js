'use strict';
// Tests of the Node.js client against a real cluster with examples/service
// deployed. tests/clients (go test) starts one and runs `node --test test/`
// here with GORAY_TEST_ADDRESS and GORAY_TEST_TOKEN set; without them every
// test is skipped.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const goray = require('..');

const ADDRESS = process.env.GORAY_TEST_ADDRESS || '';
const TOKEN = process.env.GORAY_TEST_TOKEN || undefined;
const NAMESPACE = process.env.GORAY_TEST_NAMESPACE || 'service';
const skip = ADDRESS ? false : 'GORAY_TEST_ADDRESS is not set: no cluster to test against';

let client;
before(async () => {
  if (!skip) client = await goray.connect(ADDRESS, { token: TOKEN, namespace: NAMESPACE, timeout: 60 });
});
after(() => client && client.close());

async function rejectsWith(promiseFn, Cls, code) {
  await assert.rejects(promiseFn, (err) => {
    assert.ok(err instanceof Cls, `got ${err && err.constructor.name}: ${err && err.message}, want ${Cls.name}`);
    assert.equal(err.code, code);
    assert.ok(err.details);
    return true;
  });
}

test('handshake', { skip }, () => {
  assert.equal(client.info.protocol_version, goray.PROTOCOL_VERSION);
  assert.ok(client.info.namespaces.includes(NAMESPACE));
  assert.ok(client.info.node_count >= 2);
});

test('put/get of each encoding', { skip }, async () => {
  const obj = { a: [1, 2.5, 'x', null, true], b: { c: 'd' } };
  assert.deepEqual(await client.get(await client.put(obj)), obj);
  assert.deepEqual(await client.get(await client.put(obj, { encoding: 'json' })), obj);
  const raw = Buffer.from([0, 255, 1, 2]);
  assert.deepEqual(await client.get(await client.put(raw)), raw);
  // protobuf: goray.v1.ClientRef{namespace: "x"} is 0a 01 78.
  const pb = new goray.Encoded('protobuf', Buffer.from([0x0a, 0x01, 0x78]), 'type.googleapis.com/goray.v1.ClientRef');
  const got = await client.get(await client.put(pb));
  assert.equal(got.encoding, 'protobuf');
  assert.equal(got.typeUrl, pb.typeUrl);
  assert.deepEqual(got.data, pb.data);
});

test('put with replicas', { skip }, async () => {
  const nodes = client.info.node_count;
  const ref = await client.put({ kept: 'twice' }, { replicas: 2 });
  assert.equal(ref.replicas, Math.min(2, nodes));
  assert.deepEqual(await client.get(ref), { kept: 'twice' });
  const all = await client.put(Buffer.alloc(200 << 10, 7), { replicas: 5 });
  assert.equal(all.replicas, Math.min(5, nodes));
  assert.deepEqual(await client.get(all), Buffer.alloc(200 << 10, 7));
  assert.equal((await client.put(1)).replicas, 1);
  await assert.rejects(client.put(1, { replicas: 65 }), (err) => err.code === 3 && /65 replicas/.test(err.message));
});

test('list namespace', { skip }, async () => {
  const ns = await client.listNamespace();
  assert.deepEqual(ns.functions.square, ['int64']);
  assert.deepEqual(Object.keys(ns.actorTypes.counter).sort(), ['add', 'get', 'reset']);
});

test('actor calls', { skip }, async () => {
  const counter = client.actor('counter');
  await counter.call('reset');
  assert.equal(await counter.call('add', 5), 5);
  const refs = [];
  for (let i = 0; i < 10; i++) refs.push(await counter.remote('add', 1));
  const vals = [];
  for (const r of refs) vals.push(await client.get(r));
  assert.deepEqual(vals, [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  assert.equal(await counter.call('get'), 15);
  const info = await client.getActor('counter');
  assert.equal(info.type_name, 'counter');
});

test('task calls', { skip }, async () => {
  assert.equal(await client.call('square', 12), 144);
  assert.equal(await client.call('add', 2, 3), 5);
  assert.equal(await client.call('sum', [1, 2.5, 3.5]), 7);
  assert.equal(await client.call('upper', 'héllo'), 'HÉLLO');
  assert.equal(await client.call('greet', { name: 'Ada', age: 36 }), 'hello Ada, 36');
  assert.equal(await client.call('greet', new goray.Encoded('json', '{"name":"Bo","age":7}')), 'hello Bo, 7');
  assert.deepEqual(await client.call('reverse_bytes', Buffer.from('abc')), Buffer.from('cba'));
});

test('refs passed between calls', { skip }, async () => {
  const sq = await client.remote('square', 3);
  assert.equal(await client.call('add', sq, 1), 10);
  assert.equal(await client.call('square', await client.remote('square', 2)), 16);
  assert.equal(await client.call('square', await client.put(21)), 441);
  const counter = client.actor('counter');
  await counter.call('reset');
  assert.equal(await counter.call('add', await client.remote('square', 4)), 16);
});

test('wait and release', { skip }, async () => {
  const refs = [];
  for (let i = 0; i < 5; i++) refs.push(await client.remote('square', i));
  const { ready, notReady } = await client.wait(refs, { timeout: 60 });
  assert.equal(ready.length, 5);
  assert.equal(notReady.length, 0);
  assert.equal(await client.release(...refs), 5);
  await rejectsWith(() => client.get(refs[0]), goray.NotFoundError, grpc.status.NOT_FOUND);
});

test('50 MiB object round trip', { skip }, async () => {
  const data = crypto.randomBytes(50 << 20);
  const ref = await client.put(data);
  assert.ok(data.equals(await client.get(ref, { timeout: 120 })));
  assert.equal(await client.call('size', ref), data.length);
  const rev = await client.get(await client.remote('reverse_bytes', ref), { timeout: 120 });
  assert.ok(Buffer.from(data).reverse().equals(rev));
  await client.release(ref);
});

test('not found', { skip }, async () => {
  const cases = {
    'unknown function': () => client.remote('no_such_function', 1),
    'unknown actor': () => client.actor('no_such_actor').remote('add', 1),
    'unknown method': () => client.actor('counter').remote('no_such_method'),
    'unknown namespace': () => client.remoteWith('square', [1], { namespace: 'no-such-namespace' }),
    'unknown named actor lookup': () => client.getActor('no_such_actor'),
  };
  for (const [name, fn] of Object.entries(cases)) {
    await test(name, () => rejectsWith(fn, goray.NotFoundError, grpc.status.NOT_FOUND));
  }
});

test('invalid argument', { skip }, async () => {
  const cases = {
    'wrong argument type': () => client.call('square', 'not a number'),
    'wrong struct field type': () => client.call('greet', { name: 1, age: 'x' }),
    'wrong argument count': () => client.remote('add', 1),
    'undecodable msgpack': () => client.put(new goray.Encoded('msgpack', Buffer.from([0xc1]))),
    'undecodable json': () => client.put(new goray.Encoded('json', '{nope')),
    'protobuf without type': () => client.put(new goray.Encoded('protobuf', Buffer.from([8, 1]))),
    'undecodable argument': () => client.remote('square', new goray.Encoded('msgpack', Buffer.from([0x92, 1]))),
  };
  for (const [name, fn] of Object.entries(cases)) {
    await test(name, () => rejectsWith(fn, goray.InvalidArgumentError, grpc.status.INVALID_ARGUMENT));
  }
});

test('task error', { skip }, async () => {
  await assert.rejects(() => client.call('fail', 'boom'), (err) => {
    assert.ok(err instanceof goray.TaskError);
    assert.match(err.details, /boom/);
    return true;
  });
});

test('unauthenticated', { skip }, async () => {
  for (const [name, token] of Object.entries({ 'wrong token': '0'.repeat(64), 'missing token': '' })) {
    await test(name, () => rejectsWith(() => goray.connect(ADDRESS, { token, namespace: NAMESPACE }),
      goray.UnauthenticatedError, grpc.status.UNAUTHENTICATED));
  }
});

test('files', { skip }, async () => {
  const data = crypto.randomBytes((5 << 20) + 123);
  const sha = crypto.createHash('sha256').update(data).digest('hex');
  const info = await client.putFile(data, { replicas: 2, name: 'node/test.bin' });
  assert.equal(info.sha256, sha);
  assert.equal(info.size, data.length);
  assert.equal(info.replicasWanted, 2);
  assert.equal(info.replicaNodes.length, 2); // the cluster has two nodes
  assert.ok(data.equals(await client.getFile('node/test.bin')));
  assert.ok(data.equals(await client.getFile(`sha256:${sha}`)));
  const { Readable, PassThrough } = require('node:stream');
  const streamed = await client.putFile(Readable.from([data.subarray(0, 1000), data.subarray(1000)]));
  assert.equal(streamed.sha256, sha);
  const sink = new PassThrough();
  const got = [];
  sink.on('data', (b) => got.push(b));
  assert.equal((await client.getFile(sha, { dest: sink })).sha256, sha);
  assert.ok(data.equals(Buffer.concat(got)));
  assert.deepEqual((await client.statFile('node/test.bin')).names, ['node/test.bin']);
  assert.ok((await client.listFiles('node/')).some((f) => f.sha256 === sha));
  const five = await client.putFile(Buffer.from('five'), { replicas: 5 });
  assert.deepEqual([five.replicasWanted, five.replicaNodes.length], [5, 2]);
  assert.equal(await client.removeFile(sha), true);
  await rejectsWith(() => client.getFile(sha), goray.NotFoundError, grpc.status.NOT_FOUND);
  await client.removeFile(five.sha256);
});

test('file errors', { skip }, async () => {
  await rejectsWith(() => client.getFile('sha256:1234'), goray.InvalidArgumentError, grpc.status.INVALID_ARGUMENT);
  await rejectsWith(() => client.putFile(Buffer.from('x'), { name: 'a//b' }), goray.InvalidArgumentError, grpc.status.INVALID_ARGUMENT);
  await rejectsWith(() => client.statFile('ab'.repeat(32)), goray.NotFoundError, grpc.status.NOT_FOUND);
  await rejectsWith(() => client.getFile('no/such/file'), goray.NotFoundError, grpc.status.NOT_FOUND);
});

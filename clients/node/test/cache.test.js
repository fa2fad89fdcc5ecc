'use strict';
// Tests of the Node.js client's cache against a real cluster (tests/clients
// runs them; without GORAY_TEST_ADDRESS every test is skipped).

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

const newCache = (opts) => client.createCache(`node-${crypto.randomBytes(6).toString('hex')}`, opts);

test('cache set, get, delete and stats', { skip }, async () => {
  const c = await newCache({ shards: 2 });
  assert.equal(await c.get('missing'), undefined);
  assert.equal(await c.get('missing', 'dflt'), 'dflt');
  const values = { a: { x: [1, 2.5, null] }, b: Buffer.from([0, 1, 2]), c: 'text', d: 42 };
  for (const [k, v] of Object.entries(values)) await c.set(k, v);
  for (const [k, v] of Object.entries(values)) assert.deepEqual(await c.get(k), v);
  assert.equal(await c.delete('a'), true);
  assert.equal(await c.delete('a'), false);
  const st = await c.stats();
  assert.equal(st.shards.length, 2);
  assert.equal(st.total.entries, 3);
  assert.equal(st.total.hits, 4);
  assert.equal(st.total.misses, 2);
  assert.equal(await client.cache(c.name).get('c'), 'text');
});

test('cache LRU eviction and TTL', { skip }, async () => {
  const c = await newCache({ shards: 1, maxEntries: 2 });
  await c.set('a', 1);
  await c.set('b', 2);
  await c.get('a');
  await c.set('c', 3);
  assert.deepEqual([await c.get('a'), await c.get('b'), await c.get('c')], [1, undefined, 3]);
  assert.equal((await c.stats()).total.evictions, 1);
  await c.set('short', 1, { ttl: 0.2 });
  const deadline = Date.now() + 30000;
  while (await c.has('short')) { // polls until the entry expired
    assert.ok(Date.now() < deadline, 'the 0.2 s entry never expired');
    await new Promise((r) => setTimeout(r, 50));
  }
});

test('cache atomic operations', { skip }, async () => {
  const c = await newCache({ shards: 2 });
  assert.equal(await c.incr('n'), 1);
  assert.equal(await c.incr('n', 41), 42);
  assert.equal(await c.compareAndSwap('k', goray.ABSENT, 'v1'), true);
  assert.equal(await c.compareAndSwap('k', goray.ABSENT, 'v2'), false);
  assert.equal(await c.compareAndSwap('k', 'v1', 'v2'), true);
  assert.equal(await c.get('k'), 'v2');
  await assert.rejects(() => c.incr('k'), (err) => err instanceof goray.InvalidArgumentError);
});

test('cache getOrCompute computes once', { skip }, async () => {
  const c = await newCache({ shards: 2 });
  let calls = 0;
  const compute = async () => {
    calls++;
    await new Promise((r) => setTimeout(r, 300)); // the computation's work: the others ask meanwhile
    return { computed: true };
  };
  const results = await Promise.all(Array.from({ length: 20 }, () => c.getOrCompute('k', compute)));
  assert.equal(calls, 1);
  for (const r of results) assert.deepEqual(r, { computed: true });
  await assert.rejects(() => c.getOrCompute('bad', async () => { throw new Error('boom'); }), /boom/);
  assert.equal(await c.getOrCompute('bad', async () => 'ok'), 'ok');
});

test('cache errors', { skip }, async () => {
  await assert.rejects(() => client.cache('no-such-cache').get('k'), (err) => err instanceof goray.NotFoundError);
  await assert.rejects(() => client.createCache('bad/name'), (err) => err instanceof goray.InvalidArgumentError);
  const c = await newCache({ shards: 1, maxEntries: 5 });
  await assert.rejects(() => client.createCache(c.name, { shards: 1, maxEntries: 6 }),
    (err) => err.code === grpc.status.ALREADY_EXISTS);
});

// The npm etcd3 client against a goray head's coordination service, with
// the cluster's etcd credentials (GORAY_TEST_ETCD_* set by tests/clients).
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError } = require('etcd3');

const hosts = process.env.GORAY_TEST_ETCD_ENDPOINTS.split(',');
const rw = { username: process.env.GORAY_TEST_ETCD_USER, password: process.env.GORAY_TEST_ETCD_PASSWORD };
const ro = { username: process.env.GORAY_TEST_ETCD_RO_USER, password: process.env.GORAY_TEST_ETCD_RO_PASSWORD };

test('put, get, watch and lock with the cluster credentials', async () => {
  const client = new Etcd3({ hosts, auth: rw });
  try {
    await client.put('/node/k').value('v1');
    assert.strictEqual(await client.get('/node/k').string(), 'v1');

    const watcher = await client.watch().key('/node/w').create();
    const seen = new Promise((resolve) => watcher.on('put', (kv) => resolve(kv.value.toString())));
    await client.put('/node/w').value('changed');
    assert.strictEqual(await seen, 'changed');
    await watcher.cancel();

    const lock = client.lock('/node/lock').ttl(5);
    await lock.acquire();
    // Another holder cannot take it while it is held.
    const other = new Etcd3({ hosts, auth: rw });
    await assert.rejects(other.lock('/node/lock').ttl(5).acquire(), /lock/i);
    other.close();
    await lock.release();
  } finally {
    client.close();
  }
});

test('wrong credentials are an authentication error', async () => {
  const client = new Etcd3({ hosts, auth: { username: rw.username, password: 'wrong' } });
  try {
    await assert.rejects(client.get('/node/k').string(), EtcdAuthenticationFailedError);
  } finally {
    client.close();
  }
});

test('the read-only user reads but cannot write', async () => {
  const client = new Etcd3({ hosts, auth: ro });
  try {
    assert.strictEqual(await client.get('/node/k').string(), 'v1');
    await assert.rejects(client.put('/node/k').value('v2'), EtcdPermissionDeniedError);
  } finally {
    client.close();
  }
});

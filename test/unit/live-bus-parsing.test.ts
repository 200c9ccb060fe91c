import t from 'tap'
import { channelTopic, decodeEvent, inboxTopic, messagePayloadPrefix } from '../../src/bus/events.ts'
import { parseReadUri, parseResourceUri, resourceUri, topicOf } from '../../src/mcp/resources.ts'
import type { AuthContext } from '../../src/auth/types.ts'

/** The pure parts of the live bus: which URIs are resources, and what a NOTIFY payload means. */

t.test('resource URIs: exactly bus://inbox and bus://channels/NAME', async (t) => {
  t.same(parseResourceUri('bus://inbox'), { kind: 'inbox' })
  t.same(parseResourceUri('bus://channels/deploys'), { kind: 'channel', name: 'deploys' })
  t.same(parseResourceUri('bus://channels/a.b:c-d_e'), { kind: 'channel', name: 'a.b:c-d_e' })
  for (const uri of ['bus://inbox/', 'bus://inbox/7', 'BUS://inbox', 'bus://channels/', 'bus://channels/-x', 'bus://channels/a b', 'bus://channels/a%20b',
    'bus://channels/deploys/', 'bus://channels/deploys#x', 'bus://channels/deploys?after=1', `bus://channels/${'x'.repeat(65)}`, 'file:///etc/passwd', '', 'bus://channels/../inbox']) {
    t.equal(parseResourceUri(uri), undefined, JSON.stringify(uri))
  }
  t.equal(resourceUri({ kind: 'channel', name: 'deploys' }), 'bus://channels/deploys')
  t.equal(resourceUri({ kind: 'inbox' }), 'bus://inbox')
})

t.test('read URIs: an optional after and limit, each at most once, in range', async (t) => {
  t.same(parseReadUri('bus://channels/d'), { resource: { kind: 'channel', name: 'd' } })
  t.same(parseReadUri('bus://channels/d?after=5'), { resource: { kind: 'channel', name: 'd' }, after: 5 })
  t.same(parseReadUri('bus://inbox?limit=500&after=0'), { resource: { kind: 'inbox' }, after: 0, limit: 500 })
  for (const uri of ['bus://channels/d?after=-1', 'bus://channels/d?after=1.5', 'bus://channels/d?after=', 'bus://channels/d?limit=0', 'bus://channels/d?limit=501',
    'bus://channels/d?after=1&after=2', 'bus://channels/d?sort=asc', 'bus://channels/d?after=1234567890123456', 'bus://nope?after=1']) {
    t.equal(parseReadUri(uri), undefined, uri)
  }
})

t.test('topics: a channel is the same for everyone, an inbox is its principal\'s own', async (t) => {
  const alice = { principalId: 7 } as AuthContext
  const bob = { principalId: 8 } as AuthContext
  t.equal(topicOf({ kind: 'channel', name: 'd' }, alice), topicOf({ kind: 'channel', name: 'd' }, bob))
  t.not(topicOf({ kind: 'inbox' }, alice), topicOf({ kind: 'inbox' }, bob))
  t.equal(topicOf({ kind: 'inbox' }, alice), inboxTopic(7))
})

t.test('NOTIFY payloads decode to events, and nothing else does', async (t) => {
  t.same(decodeEvent(`${messagePayloadPrefix(channelTopic('deploys'))}42`), { kind: 'resource_updated', uri: 'bus://channels/deploys', messageId: 42 })
  t.same(decodeEvent(`${messagePayloadPrefix(inboxTopic(3))}9`), { kind: 'resource_updated', uri: 'bus://inbox/3', messageId: 9 })
  t.same(decodeEvent('l'), { kind: 'resources_list_changed' })
  for (const payload of ['', 'u', 'u bus://channels/x', 'u bus://channels/x 1 2', 'u bus://channels/x -1', 'x bus://channels/x 1', 'c:1', 'p:2', 'L']) {
    t.equal(decodeEvent(payload), undefined, JSON.stringify(payload))
  }
})

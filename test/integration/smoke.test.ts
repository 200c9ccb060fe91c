import t from 'tap'
import { callTool, principalWithToken, startTestServer } from '../helpers/server.ts'

t.test('a message sent by one principal is read by another', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  const bob = await principalWithToken(server, 'bob')
  const sent = await callTool(server, alice, 'bus_send', { channel: 'general', body: 'hello' })
  t.equal(sent.isError, false, sent.text)
  const read = await callTool(server, bob, 'bus_read', { channel: 'general' })
  t.equal(read.data.messages[0].body, 'hello')
  t.equal(read.data.messages[0].from, 'alice')
})

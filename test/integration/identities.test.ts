import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { eq, sql } from 'drizzle-orm'
import t, { type Test } from 'tap'
import { onLocalAuthChange } from '../../src/auth/invalidation.ts'
import { externalIdentities, principals } from '../../src/db/schema.ts'
import {
  linkIdentity, listIdentities, liveIdentities, principalForIdentity, principalNameFor, provisionIdentity, touchIdentities, unlinkIdentity
} from '../../src/idp/identities.ts'
import { createPrincipal, listPrincipals, setPrincipalDisabled } from '../../src/principals/store.ts'
import { startCliHost, type Run } from '../helpers/cli.ts'
import { createTestDatabase } from '../helpers/database.ts'
import { postgres, testNeeding } from '../helpers/requirements.ts'
import { startTestServer } from '../helpers/server.ts'

const PROVIDERS = ['dex', 'entra']

t.test('the store: link, list, resolve, unlink', async (t) => {
  const { database } = await createTestDatabase(t)
  const db = database.db
  await createPrincipal(db, 'alice', 'bus:read bus:write')
  await createPrincipal(db, 'bob', 'bus:read')
  let changes = 0
  t.teardown(onLocalAuthChange(() => { changes++ }))

  const linked = await linkIdentity(db, { provider: 'dex', subject: 'CiQ-alice', principal: 'alice' }, PROVIDERS)
  t.match(linked, { id: Number, provider: 'dex', subject: 'CiQ-alice', principal: 'alice', created_at: String, last_seen_at: null })
  t.equal(changes, 1, 'a link drops cached credentials (a remembered "not linked")')
  const bobs = await linkIdentity(db, { provider: 'entra', subject: 'oid-bob', principal: 'bob' }, PROVIDERS)
  await linkIdentity(db, { provider: 'dex', subject: 'CiQ-bob', principal: 'bob' }, PROVIDERS)

  t.same((await listIdentities(db)).map((i) => [i.provider, i.subject, i.principal]),
    [['dex', 'CiQ-alice', 'alice'], ['dex', 'CiQ-bob', 'bob'], ['entra', 'oid-bob', 'bob']], 'ordered by provider, then subject')
  t.same((await listIdentities(db, 'entra')).map((i) => i.id), [bobs.id])
  t.same(await listIdentities(db, 'nope'), [])

  t.same(await principalForIdentity(db, 'dex', 'CiQ-alice'),
    { identityId: linked.id, principalId: (await listPrincipals(db))[0]?.id, principalName: 'alice', principalScopes: ['bus:read', 'bus:write'], disabled: false })
  t.equal(await principalForIdentity(db, 'entra', 'CiQ-alice'), undefined, 'a subject belongs to its provider')
  t.equal(await principalForIdentity(db, 'dex', 'ciq-alice'), undefined, 'subjects are compared exactly')

  t.test('mistakes', async (t) => {
    await t.rejects(linkIdentity(db, { provider: 'dex', subject: 'CiQ-alice', principal: 'bob' }, PROVIDERS),
      { name: 'InputError', statusCode: 409, message: `subject "CiQ-alice" of provider "dex" is already linked to principal "alice" (identity #${linked.id}); unlink it first ("bus-mcp identity unlink ${linked.id}")` })
    await t.rejects(linkIdentity(db, { provider: 'dex', subject: 'x', principal: 'NOPE' }, PROVIDERS), { statusCode: 404, message: 'principal "NOPE" does not exist' })
    await t.rejects(linkIdentity(db, { provider: 'okta', subject: 'x', principal: 'alice' }, PROVIDERS),
      { statusCode: 400, message: 'provider "okta" is not in IDP_FILE; the providers are dex, entra' })
    await t.rejects(linkIdentity(db, { provider: 'dex', subject: 'x', principal: 'alice' }, []),
      { statusCode: 400, message: /no external identity providers are configured \(set IDP_FILE/ })
    for (const subject of ['', 'x'.repeat(256), 'a\nb', 'a\u0000b', 'a\u0085b']) {
      await t.rejects(linkIdentity(db, { provider: 'dex', subject, principal: 'alice' }, PROVIDERS), { statusCode: 400, message: /^subject must/ }, JSON.stringify(subject))
    }
    t.match(await linkIdentity(db, { provider: 'dex', subject: 'ü'.repeat(255), principal: 'alice' }, PROVIDERS), { principal: 'alice' }, '255 characters are fine')
    await t.rejects(unlinkIdentity(db, 999999), { statusCode: 404, message: 'identity 999999 does not exist (see "bus-mcp identity list")' })
  })

  t.test('live identities, last seen, disabled principals', async (t) => {
    const live = await liveIdentities(db, [linked.id, bobs.id, 999999])
    t.same([...live.entries()].sort(), [[linked.id, ['bus:read', 'bus:write']], [bobs.id, ['bus:read']]])
    t.same(await liveIdentities(db, []), new Map())
    await setPrincipalDisabled(db, 'bob', true)
    t.same([...(await liveIdentities(db, [linked.id, bobs.id])).keys()], [linked.id], 'a disabled principal\'s identities are not live')
    t.match(await principalForIdentity(db, 'entra', 'oid-bob'), { principalName: 'bob', disabled: true }, 'resolved, and said to be disabled')
    await setPrincipalDisabled(db, 'bob', false)

    await touchIdentities(db, [linked.id])
    await touchIdentities(db, [])
    const [seen] = await listIdentities(db, 'dex')
    t.ok(seen?.last_seen_at !== null && Date.now() - Date.parse(seen?.last_seen_at ?? '') < 60_000, 'last_seen_at written')
  })

  t.test('unlink', async (t) => {
    const before = changes
    t.match(await unlinkIdentity(db, bobs.id), { id: bobs.id, provider: 'entra', subject: 'oid-bob', principal: 'bob' })
    t.equal(changes, before + 1, 'every replica drops cached credentials')
    t.equal(await principalForIdentity(db, 'entra', 'oid-bob'), undefined)
    t.same(await liveIdentities(db, [bobs.id]), new Map())
    t.same((await listPrincipals(db)).map((p) => p.name), ['alice', 'bob'], 'the principal stays')
  })

  t.test('deleting a principal deletes its identities', async (t) => {
    await db.delete(principals).where(eq(principals.name, 'bob'))
    t.same((await listIdentities(db)).map((i) => i.principal), ['alice', 'alice'])
  })
})

t.test('principal names for auto-provisioned identities', async (t) => {
  const name = (value: string | null, subject = 'sub-1'): string => principalNameFor({ provider: 'dex', subject, name: value })
  t.equal(name('alice'), 'alice')
  t.equal(name('alice@example.com'), 'alice-example.com')
  t.equal(name('Ålice Smïth'), 'Alice-Smith', 'accents dropped, spaces become "-"')
  t.equal(name('  _x'), 'x', 'starts with a letter or digit')
  t.equal(name('a'.repeat(100)), 'a'.repeat(48), 'room left for a suffix')
  t.equal(name('bob...'), 'bob', 'no trailing dots or dashes')
  t.match(name(null), /^dex-[0-9a-f]{10}$/, 'no name claim: provider and a hash of the subject')
  t.match(name('日本語'), /^dex-[0-9a-f]{10}$/, 'nothing usable: the same')
  t.not(name(null, 'sub-1'), name(null, 'sub-2'), 'different subjects, different names')
  t.equal(name(null, 'sub-1'), name(null, 'sub-1'), 'stable')
})

t.test('provisionIdentity: a principal at first sight, then the same one', async (t) => {
  const { database } = await createTestDatabase(t)
  const db = database.db
  await createPrincipal(db, 'carol', 'bus:read')

  const first = await provisionIdentity(db, { provider: 'dex', subject: 'sub-dave', name: 'dave', scopes: ['bus:read'] })
  t.match(first, { identityId: Number, principalId: Number, principalName: 'dave', principalScopes: ['bus:read'], disabled: false })
  t.same(await provisionIdentity(db, { provider: 'dex', subject: 'sub-dave', name: 'renamed', scopes: ['bus:write'] }), first, 'found again, unchanged')
  t.same(await principalForIdentity(db, 'dex', 'sub-dave'), first)

  const clash = await provisionIdentity(db, { provider: 'dex', subject: 'sub-carol', name: 'carol', scopes: ['bus:write', 'bus:read'] })
  t.match(clash, { principalName: 'carol-2', principalScopes: ['bus:read', 'bus:write'] }, 'an existing name gets -2')
  t.match(await provisionIdentity(db, { provider: 'entra', subject: 'sub-carol', name: 'carol', scopes: ['bus:read'] }), { principalName: 'carol-3' })
  t.match(await provisionIdentity(db, { provider: 'entra', subject: 'no-name', name: null, scopes: ['bus:read'] }), { principalName: /^entra-[0-9a-f]{10}$/ })

  await t.rejects(provisionIdentity(db, { provider: 'dex', subject: '', name: 'x', scopes: ['bus:read'] }), { name: 'InputError', statusCode: 400 })
  await t.rejects(provisionIdentity(db, { provider: 'dex', subject: 'y', name: 'x', scopes: [] }), { name: 'InputError', statusCode: 400 })

  // Every suffix taken: the hash of the subject decides.
  for (let i = 2; i <= 20; i++) await createPrincipal(db, `erin-${i}`, 'bus:read')
  await createPrincipal(db, 'erin', 'bus:read')
  t.match(await provisionIdentity(db, { provider: 'dex', subject: 'sub-erin', name: 'erin', scopes: ['bus:read'] }), { principalName: /^erin-[0-9a-f]{10}$/ })
  // "%" and "_" in a name are not LIKE wildcards when looking for taken names.
  await createPrincipal(db, 'f_x', 'bus:read')
  t.match(await provisionIdentity(db, { provider: 'dex', subject: 'sub-f', name: 'f_x', scopes: ['bus:read'] }), { principalName: 'f_x-2' })
})

async function concurrentProvisioning (t: Test): Promise<void> {
  const { database } = await createTestDatabase(t)
  const db = database.db
  await createPrincipal(db, 'grace', 'bus:read')
  const results = await Promise.all(Array.from({ length: 20 }, async () =>
    await provisionIdentity(db, { provider: 'dex', subject: 'sub-grace', name: 'grace', scopes: ['bus:read'] })))
  t.equal(new Set(results.map((r) => r.identityId)).size, 1, 'every call answers the same identity')
  t.equal(new Set(results.map((r) => r.principalName)).size, 1, 'and the same principal')
  t.match(results[0], { principalName: 'grace-2' })
  t.same((await listPrincipals(db)).map((p) => p.name), ['grace', 'grace-2'], 'exactly one principal was created')
  const [count] = await db.select({ n: sql<number>`count(*)::int` }).from(externalIdentities)
  t.equal(Number(count?.n), 1, 'exactly one identity')
}

testNeeding(t, '20 concurrent first requests for one subject on PostgreSQL: one principal, one identity', [postgres()], concurrentProvisioning)
t.test('20 concurrent first requests on this database', concurrentProvisioning)

/** `--json` output must be exactly one JSON value. */
function json (t: Test, run: Run, what: string): any {
  t.equal(run.code, 0, `${what}: exit 0 ${run.stderr.trim()}`)
  t.equal(run.stdout.trim().split('\n').length, 1, `${what}: one line`)
  return JSON.parse(run.stdout)
}

t.test('the admin API and the CLI', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bus-identities-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const idpFile = join(dir, 'idp.json')
  writeFileSync(idpFile, JSON.stringify({ providers: [{ id: 'dex', issuer: 'http://127.0.0.1:5556/dex' }, { id: 'entra', issuer: 'https://login.example.com/t/v2.0' }] }))
  const [server, cli] = await Promise.all([startTestServer(t, { listen: true, env: { IDP_FILE: idpFile } }), startCliHost(t)])
  const env = { BUS_ADMIN_URL: server.adminUrl }
  await createPrincipal(server.database.db, 'alice', 'bus:read bus:write')
  await createPrincipal(server.database.db, 'bob', 'bus:read')

  t.test('admin API', async (t) => {
    const created = await server.admin.inject({ method: 'POST', url: '/identities', payload: { provider: 'entra', subject: 'oid-bob', principal: 'bob' } })
    t.equal(created.statusCode, 201)
    t.match(created.json(), { id: Number, provider: 'entra', subject: 'oid-bob', principal: 'bob', created_at: String, last_seen_at: null })
    const again = await server.admin.inject({ method: 'POST', url: '/identities', payload: { provider: 'entra', subject: 'oid-bob', principal: 'alice' } })
    t.equal(again.statusCode, 409)
    t.match(again.json(), { error: 'invalid_request', message: /already linked to principal "bob"/ })
    const unknown = await server.admin.inject({ method: 'POST', url: '/identities', payload: { provider: 'okta', subject: 'x', principal: 'bob' } })
    t.same([unknown.statusCode, unknown.json().message], [400, 'provider "okta" is not in IDP_FILE; the providers are dex, entra'])
    for (const payload of [{ provider: 'dex', subject: 'x' }, { provider: 'dex', subject: { a: 1 }, principal: 'bob' }, { provider: 'dex', subject: 'x'.repeat(256), principal: 'bob' }]) {
      const bad = await server.admin.inject({ method: 'POST', url: '/identities', payload })
      t.equal(bad.statusCode, 400, JSON.stringify(payload).slice(0, 80))
    }
    const listed = await server.admin.inject({ method: 'GET', url: '/identities?provider=entra' })
    t.same(listed.json().identities.map((i: { subject: string }) => i.subject), ['oid-bob'])
    const typo = await server.admin.inject({ method: 'GET', url: '/identities?provider=entar' })
    t.same([typo.statusCode, typo.json().message], [400, 'provider "entar" is not in IDP_FILE; the providers are dex, entra'])
    const removed = await server.admin.inject({ method: 'DELETE', url: `/identities/${String(created.json().id)}` })
    t.match([removed.statusCode, removed.json()], [200, { id: created.json().id, principal: 'bob' }])
    const gone = await server.admin.inject({ method: 'DELETE', url: `/identities/${String(created.json().id)}` })
    t.equal(gone.statusCode, 404)
    t.equal((await server.admin.inject({ method: 'DELETE', url: '/identities/abc' })).statusCode, 400)

    await server.runtime.audit.flush()
    const audit = (await server.admin.inject({ method: 'GET', url: '/audit?limit=10' })).json().entries as Array<{ action: string, detail: string }>
    t.match(audit.filter((e) => e.action.startsWith('identity.')), [
      { action: 'identity.link', detail: `entra #${String(created.json().id)} -> bob` },
      { action: 'identity.unlink', detail: `entra #${String(created.json().id)} -> bob` }
    ], 'links and unlinks are audited')
  })

  t.test('CLI', async (t) => {
    const linked = json(t, await cli(['identity', 'link', '--provider', 'dex', '--subject', 'CiQ alice', '--principal', 'alice', '--json'], env), 'identity link')
    t.match(linked, { id: Number, provider: 'dex', subject: 'CiQ alice', principal: 'alice' })
    const human = await cli(['identity', 'link', '--provider', 'entra', '--subject', 'oid-alice', '--principal', 'alice'], env)
    t.match(human, { code: 0, stdout: /^identity \d+: entra subject oid-alice acts as principal alice\n$/ })

    const [all, dexOnly, table] = await Promise.all([
      cli(['identity', 'list', '--json'], env),
      cli(['--json', 'identity', 'list', '--provider', 'dex'], env),
      cli(['identity', 'list'], env)
    ])
    t.same(json(t, all, 'identity list').map((i: { subject: string }) => i.subject), ['CiQ alice', 'oid-alice'])
    t.same(json(t, dexOnly, 'identity list --provider').map((i: { id: number }) => i.id), [linked.id])
    t.match(table.stdout, /^ID\s+PROVIDER\s+SUBJECT\s+PRINCIPAL\s+CREATED_AT\s+LAST_SEEN_AT\n/, 'a table')
    t.match(table.stdout, new RegExp(`\\n${String(linked.id)}\\s+dex\\s+CiQ alice\\s+alice\\s+\\S+\\s+-\\n`), 'never seen: "-"')

    const unlinked = json(t, await cli(['identity', 'unlink', String(linked.id), '--json'], env), 'identity unlink')
    t.match(unlinked, { id: linked.id, provider: 'dex', subject: 'CiQ alice', principal: 'alice' })
    const oids = json(t, await cli(['identity', 'list', '--provider', 'entra', '--json'], env), 'identity list --provider entra')
    t.match(await cli(['identity', 'unlink', String(oids[0].id)], env),
      { code: 0, stdout: `identity ${String(oids[0].id)} unlinked: entra subject oid-alice no longer acts as principal alice\n` })
    json(t, await cli(['identity', 'link', '--provider', 'entra', '--subject', 'oid-alice', '--principal', 'alice', '--json'], env), 'link again')

    const cases: Array<[string[], number, RegExp]> = [
      [['identity', 'link', '--provider', 'entra', '--subject', 'oid-alice', '--principal', 'bob'], 1, /^bus-mcp: subject "oid-alice" of provider "entra" is already linked to principal "alice"/],
      [['identity', 'link', '--provider', 'okta', '--subject', 'x', '--principal', 'bob'], 1, /^bus-mcp: provider "okta" is not in IDP_FILE; the providers are dex, entra\n$/],
      [['identity', 'link', '--provider', 'dex', '--subject', 'x', '--principal', 'NOPE'], 1, /^bus-mcp: principal "NOPE" does not exist\n$/],
      [['identity', 'list', '--provider', 'okta'], 1, /^bus-mcp: provider "okta" is not in IDP_FILE/],
      [['identity', 'unlink', String(linked.id)], 1, new RegExp(`^bus-mcp: identity ${String(linked.id)} does not exist \\(see "bus-mcp identity list"\\)\\n$`)],
      [['identity', 'unlink', 'abc'], 2, /^bus-mcp: identity unlink wants the identity's numeric id \(the ID column of "bus-mcp identity list"\), not "abc"; see "bus-mcp identity unlink --help"\n$/],
      [['identity', 'link', '--provider', 'dex', '--subject', 'x'], 2, /required option '--principal <name>' not specified; see "bus-mcp identity link --help"/]
    ]
    const runs = await Promise.all(cases.map(async ([args]) => await cli(args, env)))
    runs.forEach((run, i) => {
      const [args, code, message] = cases[i] as [string[], number, RegExp]
      t.equal(run.code, code, `${args.join(' ')}: exit ${code}`)
      t.match(run.stderr, message, `${args.join(' ')}: ${run.stderr.trim()}`)
      t.equal(run.stdout, '', 'nothing on stdout')
    })
  })
})

t.test('admin id routes: an id beyond what a bigint or a JSON number holds exactly is a 400, not a database error', async (t) => {
  const server = await startTestServer(t)
  for (const [method, url] of [['POST', '/tokens/99999999999999999999/revoke'], ['POST', '/grants/9007199254740993/revoke'], ['DELETE', '/identities/99999999999999999999']] as const) {
    const response = await server.admin.inject({ method, url })
    t.equal(response.statusCode, 400, `${method} ${url}`)
  }
  const safe = await server.admin.inject({ method: 'POST', url: `/tokens/${Number.MAX_SAFE_INTEGER}/revoke` })
  t.equal(safe.statusCode, 404, 'the largest exact id is looked up (and not found)')
})

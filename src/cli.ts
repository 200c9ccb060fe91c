#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { ConfigError, loadConfig } from './config.ts'
import { formatReport, runDoctor } from './doctor/run.ts'
import { loadIdpFile } from './idp/config.ts'
import type { IdpProvider } from './idp/types.ts'
import { VERSION } from './version.ts'

/**
 * `bus-mcp`: the admin CLI. Every command but `migrate` talks to the running server's admin API
 * (BUS_ADMIN_URL / --admin-url, token from BUS_ADMIN_TOKEN), so it works the same with the
 * embedded database and with PostgreSQL. `--json` prints one JSON value for scripts.
 *
 * Errors are one line on stderr starting "bus-mcp:". Exit 1: the server refused or could not be
 * reached; exit 2: the command line itself is wrong (unknown command or option, a bad value),
 * with a pointer to that command's --help.
 */

/** A failure after the command line was understood: exit 1. */
class CliError extends Error {}

/** A mistake in the command line: exit 2. */
class UsageError extends Error {
  constructor (message: string, command: Command) {
    super(`${message}; see "${commandPath(command)} --help"`)
  }
}

/** "bus-mcp token revoke" for the revoke command. */
function commandPath (command: Command): string {
  const names: string[] = []
  for (let current: Command | null = command; current !== null; current = current.parent) names.unshift(current.name())
  return names.join(' ')
}

interface GlobalOptions { adminUrl: string, json: boolean }

const DEFAULT_ADMIN_URL = 'http://127.0.0.1:8089'

const program = new Command()
  .name('bus-mcp')
  .description('Administer a Bus MCP Server through its admin API')
  .version(VERSION, '--version', 'print the version')
  .addOption(new Option('--admin-url <url>', 'admin API address').env('BUS_ADMIN_URL').default(DEFAULT_ADMIN_URL))
  .option('--json', 'print one JSON value (for scripts)', false)
  // Set before any subcommand is added: they inherit it. Commander then throws instead of exiting.
  .exitOverride()
  .addHelpText('after', `
Environment:
  BUS_ADMIN_URL    admin API address, as --admin-url (the server's ADMIN_HOST:ADMIN_PORT;
                   default ${DEFAULT_ADMIN_URL})
  BUS_ADMIN_TOKEN  the server's ADMIN_TOKEN, when it has one (sent as a bearer token)
  DATABASE_URL, DATA_DIR
                   the database "migrate" opens (the other commands go through the admin API)

Errors are one line on stderr starting "bus-mcp:"; the exit code is 1, or 2 when the command
line is wrong. Each command has its own --help, e.g. "bus-mcp token issue --help".`)

function globals (): GlobalOptions {
  return program.opts<GlobalOptions>()
}

/** The admin API's base URL, checked before any request. */
function adminBase (): URL {
  const { adminUrl } = globals()
  let url: URL | undefined
  try {
    url = new URL(adminUrl.endsWith('/') ? adminUrl : `${adminUrl}/`)
  } catch {}
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new UsageError(`--admin-url / BUS_ADMIN_URL must be an http:// or https:// URL such as ${DEFAULT_ADMIN_URL}, not "${adminUrl.slice(0, 100)}"`, program)
  }
  return url
}

async function api<T> (method: string, path: string, body?: unknown): Promise<T> {
  const { adminUrl } = globals()
  const base = adminBase()
  const headers: Record<string, string> = { accept: 'application/json' }
  const token = process.env.BUS_ADMIN_TOKEN
  if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  let response: Response
  try {
    response = await fetch(new URL(path, base), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(30_000)
    })
  } catch (err) {
    throw new CliError(`cannot reach the admin API at ${adminUrl} (${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}); is the server running? (set --admin-url or BUS_ADMIN_URL)`)
  }
  const text = await response.text()
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch {
    throw new CliError(await notAdmin(adminUrl, base, `answered ${method} /${path.split('?')[0] ?? ''} with HTTP ${response.status} and a body that is not JSON`))
  }
  if (!response.ok) {
    const { error, message } = data as { error?: unknown, message?: unknown }
    // The admin API answers 404 with "invalid_request" for a missing principal, token, client or
    // grant, and says "is not an admin route" for an unknown path; any other 404 to our routes
    // comes from another listener (most often the bus's public port).
    if (response.status === 404 && error !== 'invalid_request' && !(typeof message === 'string' && message.endsWith(' is not an admin route'))) {
      throw new CliError(await notAdmin(adminUrl, base, `has no ${method} /${path.split('?')[0] ?? ''}`))
    }
    throw new CliError(typeof message === 'string' ? message : `the admin API answered HTTP ${response.status}`)
  }
  return data as T
}

/**
 * The error when --admin-url is not the admin API. The bus's public listener is recognised by its
 * OAuth metadata, which the admin listener does not serve.
 */
async function notAdmin (adminUrl: string, base: URL, what: string): Promise<string> {
  const fix = `the admin API listens on ADMIN_HOST:ADMIN_PORT (default ${DEFAULT_ADMIN_URL}): set --admin-url or BUS_ADMIN_URL to it`
  try {
    const response = await fetch(new URL('.well-known/oauth-authorization-server', base), { signal: AbortSignal.timeout(5_000) })
    const metadata = await response.json() as { issuer?: unknown }
    if (response.ok && typeof metadata.issuer === 'string') {
      return `${adminUrl} is the bus's public port (the server of ${metadata.issuer}), not its admin API; ${fix}`
    }
  } catch {}
  return `${adminUrl} ${what}: it is not a bus-mcp admin API; ${fix}`
}

function output (value: unknown, human: () => string): void {
  process.stdout.write(globals().json ? `${JSON.stringify(value)}\n` : `${human()}\n`)
}

function table (rows: Array<Record<string, unknown>>, columns: string[]): string {
  if (rows.length === 0) return '(none)'
  const cell = (v: unknown): string => v === null || v === undefined ? '-' : Array.isArray(v) ? v.join(' ') : String(v)
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)))
  const line = (values: string[]): string => values.map((v, i) => v.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(columns.map((c) => c.toUpperCase())), ...rows.map((r) => line(columns.map((c) => cell(r[c]))))].join('\n')
}

/** An option value that must be a whole number in [min, max] (the admin API's own bounds). */
function wholeNumber (min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^[0-9]+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`)
    }
    return Number(value)
  }
}

/**
 * The ID argument of `token revoke` / `grant revoke`: the number the list command shows. The value
 * is echoed only when it is short and does not look like a token (people paste the token itself).
 */
function listedId (value: string, what: string, command: Command): number {
  if (/^[1-9][0-9]{0,15}$/.test(value) && Number.isSafeInteger(Number(value))) return Number(value)
  const listing = `"bus-mcp ${what} list"`
  const not = /^bus_/.test(value) ? ', not the token itself' : value.length <= 24 ? `, not "${value}"` : ''
  throw new UsageError(`${commandPath(command).replace(/^bus-mcp /, '')} wants the ${what}'s numeric id (the ID column of ${listing})${not}`, command)
}

/** The admin API answers an empty list for a filter naming nobody: say so instead of "(none)". */
async function requirePrincipal (name: string): Promise<void> {
  const { principals } = await api<{ principals: Array<{ name: string }> }>('GET', 'principals')
  if (!principals.some((p) => p.name === name)) throw new CliError(`principal "${name}" does not exist (see "bus-mcp principal list")`)
}

const principal = program.command('principal').description('principals: the agents and people on the bus')
principal.command('add <name>')
  .description('create a principal')
  .option('--scopes <scopes>', 'space-separated scopes', 'bus:read bus:write')
  .action(async (name: string, opts: { scopes: string }) => {
    const created = await api<Record<string, unknown>>('POST', 'principals', { name, scopes: opts.scopes })
    output(created, () => `principal ${String(created.name)} created with scopes ${(created.scopes as string[]).join(' ')}`)
  })
principal.command('list').description('list principals').action(async () => {
  const { principals } = await api<{ principals: Array<Record<string, unknown>> }>('GET', 'principals')
  output(principals, () => table(principals, ['name', 'scopes', 'disabled', 'created_at']))
})
for (const action of ['disable', 'enable'] as const) {
  principal.command(`${action} <name>`)
    .description(action === 'disable' ? 'disable a principal: its tokens stop working at once' : 'enable a disabled principal again')
    .action(async (name: string) => {
      const updated = await api<Record<string, unknown>>('POST', `principals/${encodeURIComponent(name)}/${action}`)
      output(updated, () => `principal ${String(updated.name)} ${action}d`)
    })
}

const token = program.command('token').description('API tokens: static bearer tokens for command-line agents')
token.command('issue')
  .description('issue an API token (shown once)')
  .requiredOption('--principal <name>', 'the principal the token acts as')
  .option('--scopes <scopes>', 'space-separated scopes (default: all of the principal\'s)')
  .option('--label <label>', 'a note to tell tokens apart')
  .option('--expires-in <seconds>', 'expire after this many seconds (60 to 315360000)', wholeNumber(60, 315_360_000))
  .action(async (opts: { principal: string, scopes?: string, label?: string, expiresIn?: number }) => {
    const issued = await api<Record<string, unknown>>('POST', 'tokens', {
      principal: opts.principal, scopes: opts.scopes, label: opts.label, expires_in: opts.expiresIn
    })
    output(issued, () => [
      `API token #${String(issued.id)} for ${String(issued.principal)} (${(issued.scopes as string[]).join(' ')})${issued.expires_at === null ? '' : `, expires ${String(issued.expires_at)}`}:`,
      '',
      `  ${String(issued.token)}`,
      '',
      'It is shown only this once; store it now. Use it as: Authorization: Bearer <token>'
    ].join('\n'))
  })
token.command('list')
  .description('list API tokens (never their secrets)')
  .option('--principal <name>', 'only this principal\'s tokens')
  .action(async (opts: { principal?: string }) => {
    const query = opts.principal === undefined ? '' : `?principal=${encodeURIComponent(opts.principal)}`
    const { tokens } = await api<{ tokens: Array<Record<string, unknown>> }>('GET', `tokens${query}`)
    if (tokens.length === 0 && opts.principal !== undefined) await requirePrincipal(opts.principal)
    output(tokens, () => table(tokens, ['id', 'principal', 'hint', 'scopes', 'label', 'status', 'expires_at', 'last_used_at']))
  })
const tokenRevoke = token.command('revoke')
  .description('revoke an API token: it stops working at once')
  .argument('<id>', 'the token\'s numeric id, as "bus-mcp token list" shows it')
tokenRevoke.action(async (id: string) => {
  const revoked = await api<Record<string, unknown>>('POST', `tokens/${listedId(id, 'token', tokenRevoke)}/revoke`)
  output(revoked, () => `API token #${String(revoked.id)} of ${String(revoked.principal)} revoked`)
})

const client = program.command('client').description('OAuth clients: pre-registered ones, and those registered by apps')
client.command('add')
  .description('pre-register an OAuth client (claude.ai "Advanced settings", machine agents); a secret is shown once')
  .requiredOption('--name <name>', 'the name people see on the consent page')
  .option('--redirect-uri <uri>', 'an allowed redirect URI (repeat for several)', (value: string, previous: string[]) => [...previous, value], [] as string[])
  .option('--principal <name>', 'approve at once as this principal (no consent page); with --confidential, allows client_credentials')
  .option('--confidential', 'issue a client secret (client_secret_post or client_secret_basic)', false)
  .option('--scopes <scopes>', 'limit the scopes this client may get')
  .action(async (opts: { name: string, redirectUri: string[], principal?: string, confidential: boolean, scopes?: string }) => {
    const created = await api<Record<string, unknown>>('POST', 'clients', {
      name: opts.name, redirect_uris: opts.redirectUri, principal: opts.principal, confidential: opts.confidential, scopes: opts.scopes
    })
    output(created, () => [
      `client ${String(created.client_name)} registered`,
      `  client_id:     ${String(created.client_id)}`,
      ...(created.client_secret !== undefined ? [`  client_secret: ${String(created.client_secret)}`, '', 'The secret is shown only this once; store it now.'] : []),
      ...(opts.principal !== undefined ? [`Authorizations are approved at once as ${opts.principal}.`] : ['Authorizations show the consent page.'])
    ].join('\n'))
  })
client.command('list').description('list OAuth clients').action(async () => {
  const { clients } = await api<{ clients: Array<Record<string, unknown>> }>('GET', 'clients')
  output(clients, () => table(clients, ['client_id', 'kind', 'client_name', 'principal', 'token_endpoint_auth_method', 'active_grants', 'last_used_at']))
})
client.command('remove <client_id>').description('remove a client and revoke everything issued to it').action(async (clientId: string) => {
  const removed = await api<Record<string, unknown>>('DELETE', `clients/${encodeURIComponent(clientId)}`)
  output(removed, () => `client ${clientId} removed; its tokens no longer work`)
})

const grant = program.command('grant').description('OAuth grants: one per authorization of a client by a principal')
grant.command('list')
  .description('list grants')
  .option('--principal <name>', 'only this principal\'s grants')
  .option('--client <client_id>', 'only this client\'s grants')
  .action(async (opts: { principal?: string, client?: string }) => {
    const query = new URLSearchParams()
    if (opts.principal !== undefined) query.set('principal', opts.principal)
    if (opts.client !== undefined) query.set('client', opts.client)
    const { grants } = await api<{ grants: Array<Record<string, unknown>> }>('GET', `grants${query.size > 0 ? `?${query.toString()}` : ''}`)
    if (grants.length === 0 && opts.principal !== undefined) await requirePrincipal(opts.principal)
    if (grants.length === 0 && opts.client !== undefined) {
      const { clients } = await api<{ clients: Array<{ client_id: string }> }>('GET', 'clients')
      if (!clients.some((c) => c.client_id === opts.client)) throw new CliError(`client "${opts.client.slice(0, 200)}" does not exist (see "bus-mcp client list")`)
    }
    output(grants, () => table(grants, ['id', 'principal', 'client_name', 'client_id', 'scopes', 'active_tokens', 'created_at', 'revoked_at', 'revoked_reason']))
  })
const grantRevoke = grant.command('revoke')
  .description('revoke a grant: its access and refresh tokens stop working at once')
  .argument('<id>', 'the grant\'s numeric id, as "bus-mcp grant list" shows it')
grantRevoke.action(async (id: string) => {
  const revoked = await api<Record<string, unknown>>('POST', `grants/${listedId(id, 'grant', grantRevoke)}/revoke`)
  output(revoked, () => `grant #${String(revoked.revoked)} revoked`)
})

const identity = program.command('identity').description('external identities: which principal a subject at an IDP_FILE provider acts as')
identity.command('link')
  .description('let a subject of an external identity provider act as a principal')
  .requiredOption('--provider <id>', 'the provider\'s id in IDP_FILE')
  .requiredOption('--subject <sub>', 'the subject, as the provider\'s subject_claim gives it (e.g. "sub", "oid")')
  .requiredOption('--principal <name>', 'the principal the subject acts as')
  .action(async (opts: { provider: string, subject: string, principal: string }) => {
    const linked = await api<Record<string, unknown>>('POST', 'identities', { provider: opts.provider, subject: opts.subject, principal: opts.principal })
    output(linked, () => `identity ${String(linked.id)}: ${String(linked.provider)} subject ${String(linked.subject)} acts as principal ${String(linked.principal)}`)
  })
identity.command('list')
  .description('list linked external identities')
  .option('--provider <id>', 'only this provider\'s identities')
  .action(async (opts: { provider?: string }) => {
    const query = opts.provider === undefined ? '' : `?provider=${encodeURIComponent(opts.provider)}`
    const { identities } = await api<{ identities: Array<Record<string, unknown>> }>('GET', `identities${query}`)
    output(identities, () => table(identities, ['id', 'provider', 'subject', 'principal', 'created_at', 'last_seen_at']))
  })
const identityUnlink = identity.command('unlink')
  .description('remove a link: the subject\'s tokens stop working at once (a "principals: auto" provider makes a new principal at its next sign-in)')
  .argument('<id>', 'the identity\'s numeric id, as "bus-mcp identity list" shows it')
identityUnlink.action(async (id: string) => {
  const unlinked = await api<Record<string, unknown>>('DELETE', `identities/${listedId(id, 'identity', identityUnlink)}`)
  output(unlinked, () => `identity ${String(unlinked.id)} unlinked: ${String(unlinked.provider)} subject ${String(unlinked.subject)} no longer acts as principal ${String(unlinked.principal)}`)
})

program.command('login-code <name>')
  .description('a one-time code proving principal NAME on the consent page (valid 10 minutes, works once)')
  .action(async (name: string) => {
    const issued = await api<Record<string, unknown>>('POST', 'login-codes', { principal: name })
    output({ code: issued.code, expires_at: issued.expires_at }, () => `login code for ${String(issued.principal)}: ${String(issued.code)} (expires ${String(issued.expires_at)})`)
  })

/** The admin API's bound on GET /audit?limit (src/admin/app.ts). */
const AUDIT_LIMIT_MAX = 10_000

program.command('audit')
  .description('the audit log')
  .command('tail')
  .description('show the newest audit entries')
  .option('--limit <n>', `how many (1 to ${AUDIT_LIMIT_MAX})`, wholeNumber(1, AUDIT_LIMIT_MAX), 50)
  .action(async (opts: { limit: number }) => {
    const { entries } = await api<{ entries: Array<Record<string, unknown>> }>('GET', `audit?limit=${opts.limit}`)
    output(entries, () => table(entries, ['at', 'kind', 'action', 'outcome', 'principal', 'auth_kind', 'client_id', 'duration_ms', 'detail']))
  })

program.command('migrate')
  .description('apply database migrations directly (DATABASE_URL, or the embedded database in DATA_DIR when the server is stopped)')
  .action(async () => {
    let config
    try {
      config = loadConfig()
    } catch (err) {
      if (err instanceof ConfigError) throw new CliError(`configuration error: ${err.message}`)
      throw err
    }
    // Loaded here, not at the top: the database drivers double the start time of every other command.
    const { openDatabase } = await import('./db/client.ts')
    const { describeDatabaseError } = await import('./db/errors.ts')
    const { appliedMigrationCount, checkPostgres, migrate } = await import('./db/migrate.ts')
    const { databaseUrl } = config
    try {
      // One connection first: its failure says why (missing database, role, refused port…)
      // before a pool would retry it.
      if (databaseUrl !== undefined) await checkPostgres(databaseUrl)
      const database = await openDatabase({ databaseUrl, dataDir: config.dataDir, poolSize: 1 })
      try {
        const before = await appliedMigrationCount(database)
        await migrate(database, databaseUrl)
        const after = await appliedMigrationCount(database)
        output({ applied: after - before, total: after, database: database.kind }, () =>
          after === before ? `database is up to date (${after} migrations)` : `applied ${after - before} migration(s); ${after} in all`)
      } finally {
        await database.close()
      }
    } catch (err) {
      const problem = databaseUrl === undefined ? undefined : describeDatabaseError(err, databaseUrl)
      throw problem === undefined ? err : new CliError(problem)
    }
  })

program.command('doctor <url>')
  .description('check a deployment the way claude.ai discovers it (URL: https://host/mcp); prints each problem and its fix, exits 1 if any check fails')
  .option('--register', 'also register a throwaway client with claude.ai\'s exact request (creates a real client; remove it with "client remove")', false)
  .option('--idp-file <path>', 'also check the identity providers of this IDP_FILE (default: $IDP_FILE, if set): discovery, keys, introspection')
  .action(async (url: string, opts: { register: boolean, idpFile?: string }) => {
    const idpFile = opts.idpFile ?? (process.env.IDP_FILE?.trim() === '' ? undefined : process.env.IDP_FILE?.trim())
    const report = await runDoctor(url, { register: opts.register, identityProviders: idpFile === undefined ? undefined : readIdpFile(idpFile, url) })
    output(report.results, () => formatReport(report))
    if (!report.ok) process.exitCode = 1
  })

/** The providers of an IDP_FILE, with `url`'s origin standing in for PUBLIC_URL (the default audience). */
function readIdpFile (path: string, url: string): IdpProvider[] {
  let origin = 'http://localhost:8088'
  try { origin = new URL(url).origin } catch {}
  try {
    return loadIdpFile(path, { publicUrl: origin, resourceUrl: `${origin}/mcp` })
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`configuration error: ${err.message}`)
    throw err
  }
}

/**
 * Commander's own errors (unknown command or option, missing or invalid value) become one line
 * naming the command whose --help tells more. Set on every command: each names itself.
 */
function oneLineErrors (command: Command): void {
  command.configureOutput({
    outputError: (message, write) => {
      const text = message.trim().replace(/^error: /, '')
        // "option '--limit <n>' argument '20000' is invalid. must be …" → "--limit must be … (got "20000")"
        .replace(/^option '(-[^ ']+)[^']*' argument '(.*)' is invalid\. ([^]*)$/, (_all, flag: string, value: string, why: string) =>
          `${flag} ${why} (got "${value.length <= 24 ? value : `${value.slice(0, 24)}…`}")`)
        .replace(/\s*\n\s*/g, ' ').replace(/\.$/, '')
      write(`bus-mcp: ${text}; see "${commandPath(command)} --help"\n`)
    }
  })
  for (const sub of command.commands) oneLineErrors(sub)
}
oneLineErrors(program)

try {
  await program.parseAsync()
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and --version exit 0; a command line commander refused (already printed) exits 2.
    process.exitCode = err.exitCode === 0 ? 0 : 2
  } else {
    const message = err instanceof Error ? err.message : String(err)
    process.stderr.write(`bus-mcp: ${message}\n`)
    process.exitCode = err instanceof UsageError ? 2 : 1
  }
}

import { eq, sql } from 'drizzle-orm'
import { rowsOf, type Executor } from '../db/client.ts'
import { oauthGrants } from '../db/schema.ts'
import { InputError } from '../lib/input-error.ts'
import { revokeGrant } from '../oauth/grants.ts'

/** The admin's view of OAuth grants (`bus-mcp grant list|revoke`): what the admin API shows and does. */
export interface GrantView {
  id: number,
  principal: string,
  client_id: string,
  client_name: string,
  scopes: string[],
  resource: string,
  created_at: string,
  revoked_at: string | null,
  revoked_reason: string | null,
  active_tokens: number
}

export async function listGrants (db: Executor, filter: { principal?: string | undefined, clientId?: string | undefined }): Promise<GrantView[]> {
  const rows = rowsOf<{
    id: number | string,
    principal: string,
    client_id: string,
    client_name: string,
    scopes: string[],
    resource: string,
    created_at: Date | string,
    revoked_at: Date | string | null,
    revoked_reason: string | null,
    active_tokens: number | string
  }>(await db.execute(sql`
    select g.id, p.name as principal, c.client_id, c.client_name, g.scopes, g.resource, g.created_at, g.revoked_at, g.revoked_reason,
      (select count(*) from oauth_tokens t where t.grant_id = g.id and t.revoked_at is null and t.rotated_at is null and t.expires_at > now()) as active_tokens
    from oauth_grants g join principals p on p.id = g.principal_id join oauth_clients c on c.id = g.client_id
    where (${filter.principal ?? null}::text is null or p.name = ${filter.principal ?? null})
      and (${filter.clientId ?? null}::text is null or c.client_id = ${filter.clientId ?? null})
    order by g.id desc limit 1000`))
  return rows.map((r) => ({
    id: Number(r.id),
    principal: r.principal,
    client_id: r.client_id,
    client_name: r.client_name,
    scopes: r.scopes,
    resource: r.resource,
    created_at: new Date(r.created_at).toISOString(),
    revoked_at: r.revoked_at === null ? null : new Date(r.revoked_at).toISOString(),
    revoked_reason: r.revoked_reason,
    active_tokens: Number(r.active_tokens)
  }))
}

export async function revokeGrantByAdmin (db: Executor, grantId: number): Promise<void> {
  const [row] = await db.select({ id: oauthGrants.id }).from(oauthGrants).where(eq(oauthGrants.id, grantId))
  if (row === undefined) throw new InputError(`grant ${grantId} does not exist`, 404)
  await revokeGrant(db, grantId, 'admin')
}

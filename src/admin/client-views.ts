import { desc, eq, sql } from 'drizzle-orm'
import type { Executor } from '../db/client.ts'
import { oauthClients, oauthGrants, principals } from '../db/schema.ts'

/** A client as the admin API and `bus-mcp client list` show it. */
export interface ClientView {
  client_id: string,
  kind: string,
  client_name: string,
  redirect_uris: string[],
  token_endpoint_auth_method: string,
  grant_types: string[],
  scope: string | null,
  principal: string | null,
  created_at: string,
  last_used_at: string | null,
  active_grants: number
}

export async function listClients (db: Executor): Promise<ClientView[]> {
  const rows = await db.select({
    client: oauthClients,
    principal: principals.name,
    activeGrants: sql<number>`(select count(*)::int from ${oauthGrants} g where g.client_id = ${oauthClients.id} and g.revoked_at is null)`
  }).from(oauthClients).leftJoin(principals, eq(principals.id, oauthClients.principalId)).orderBy(desc(oauthClients.id))
  return rows.map(({ client, principal, activeGrants }) => ({
    client_id: client.clientId,
    kind: client.kind,
    client_name: client.clientName,
    redirect_uris: client.redirectUris,
    token_endpoint_auth_method: client.tokenEndpointAuthMethod,
    grant_types: client.grantTypes,
    scope: client.scopes?.join(' ') ?? null,
    principal: principal ?? null,
    created_at: client.createdAt.toISOString(),
    last_used_at: client.lastUsedAt?.toISOString() ?? null,
    active_grants: Number(activeGrants)
  }))
}

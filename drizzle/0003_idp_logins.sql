CREATE TABLE "oauth_idp_logins" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "oauth_idp_logins_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"state_hash" "bytea" NOT NULL,
	"pending_authorization_id" bigint NOT NULL,
	"provider" text NOT NULL,
	"nonce" text NOT NULL,
	"code_verifier" text NOT NULL,
	"browser_hash" "bytea" NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"consumed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "oauth_pending_authorizations" ADD COLUMN "signed_in_principal_id" bigint;--> statement-breakpoint
ALTER TABLE "oauth_pending_authorizations" ADD COLUMN "signed_in_provider" text;--> statement-breakpoint
ALTER TABLE "oauth_idp_logins" ADD CONSTRAINT "oauth_idp_logins_pending_authorization_id_oauth_pending_authorizations_id_fk" FOREIGN KEY ("pending_authorization_id") REFERENCES "public"."oauth_pending_authorizations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "oauth_idp_logins_state_hash_key" ON "oauth_idp_logins" USING btree ("state_hash");--> statement-breakpoint
CREATE INDEX "oauth_idp_logins_pending_idx" ON "oauth_idp_logins" USING btree ("pending_authorization_id");--> statement-breakpoint
ALTER TABLE "oauth_pending_authorizations" ADD CONSTRAINT "oauth_pending_authorizations_signed_in_principal_id_principals_id_fk" FOREIGN KEY ("signed_in_principal_id") REFERENCES "public"."principals"("id") ON DELETE cascade ON UPDATE no action;
/**
 * The names ferry gives things, one definition each: what a guest, a host and a migration may be
 * called. Each pattern comes with the words an error message uses for it.
 */

/** Guest names: what can be a file name and a DNS label. */
export const GUEST_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const GUEST_NAME_RULE = 'lower-case letters, digits and dashes, 1-63, not starting with a dash';

/** Host names: a DNS label; also the CN and SAN DNS name of the host's certificate. */
export const HOST_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const HOST_NAME_RULE = GUEST_NAME_RULE;

/** Migration ids: named in every data connection's HELLO and in the ownership records' file names. */
export const MIGRATION_ID = /^[A-Za-z0-9._-]{1,64}$/;
export const MIGRATION_ID_RULE = '1 to 64 characters of [A-Za-z0-9._-]';

/**
 * The common name of the coordinator's certificate; the agent grants it the full control API. It
 * has a space, so it can never be a host name.
 */
export const COORDINATOR_CN = 'ferry coordinator';

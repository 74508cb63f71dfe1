/** A usage error: the CLI prints `tsmtpd: error: <message>` and exits 2, as argparse does. */
export class CliError extends Error {}

/* One line per subcommand: PD_COMMAND(name, function, one-line help). No include guard on purpose. */
PD_COMMAND("mkmodel", pd_cmd_mkmodel, "write a complete Wan2.1-layout model folder with random weights")
PD_COMMAND("dit", pd_cmd_dit, "one DiT evaluation on a latent, a timestep and a text context")
PD_COMMAND("decode", pd_cmd_decode, "decode a latent with the Wan VAE into an MP4 (+ PNG thumbnail) or a video tensor")
PD_COMMAND("encode-text", pd_cmd_encode_text, "tokenize a prompt and run the umT5 text encoder")
PD_COMMAND("tokenize", pd_cmd_tokenize, "print a prompt's token ids and pieces")
PD_COMMAND("generate", pd_cmd_generate, "text to video in one process: prompt -> MP4 (and a PNG thumbnail)")
PD_COMMAND("client", pd_cmd_client, "talk to a running pipeditd: create, get, wait, download, list, delete videos")
PD_COMMAND("worker", pd_cmd_worker, "run one worker process of pipeditd (started by the daemon)")

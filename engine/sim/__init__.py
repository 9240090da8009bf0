"""The simulated cluster: the far end of every executor, so ``--simulate`` runs the real engine with no Proxmox or Talos."""

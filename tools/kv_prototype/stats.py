import torch, numpy as np
from harness import capture, load
torch.set_num_threads(1)
caps=[capture(i) for i in range(2)]
m,_=load()
for L in [0,1,5,6,11,17]:
    kp=torch.cat([c[L]['k_pre'] for c in caps]); v=torch.cat([c[L]['v'] for c in caps]); kq=torch.cat([c[L]['k_post'] for c in caps])
    w=m.model.layers[L].self_attn.k_norm.weight
    for name,x in [('kpre',kp),('kpost',kq),('v',v)]:
        sd=x.std(0); mu=x.mean(0); amax=x.abs().amax(0)
        X=x[1:]  # skip BOS
        ev=[]
        for g in (16,):
            C=X.reshape(-1,g)  # chunks
            e=torch.linalg.eigvalsh((C.T@C)/len(C)).flip(0)
            ev=(e/e.sum())[:6].numpy().round(3)
        print(L,name,'rms %.2f'%x.pow(2).mean().sqrt(),'bos|max| %.1f'%x[0].abs().max(),'tok|max| med %.2f'%X.abs().amax(1).median(),
              'ch sd range %.2f..%.2f'%(sd.min(),sd.max()),'|mu|max %.2f'%mu.abs().max(),'top ch sd',sd.topk(4).indices.tolist(), 'ev16',ev)
    print('  knorm w(1+w) range', (w).min().item(), w.max().item())
